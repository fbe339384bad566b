"""The pages the links in the suite's emails open when the gateway serves no web console (an
API-only gateway, or an image built without `web/`; with a console, its own pages answer these):
`/verify-email?token=`, `/reset-password?token=`, `/onboarding` and `/settings/security`.

Plain HTML forms posted back to the same path, which call the same auth RPCs as the JSON API:
no script at all, so the pages work under a strict Content-Security-Policy (see `middleware`)
and without JavaScript. The fields go to auth as typed (the body limit bounds them); what is
wrong with them is auth's to say, and the page shows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from huntaze.auth.v1 import auth_pb2
from huntaze_gateway.auth_routes import ACCEPTED_MESSAGE, clear_token_cookies, client_context
from huntaze_gateway.docs import DOCS_PATH
from huntaze_gateway.problems import UNSUPPORTED_MEDIA_TYPE, ApiProblem, Kind, describe
from huntaze_gateway.state import runtime_of
from huntaze_kit.rich_status import from_rpc_error

PRODUCT = "Huntaze"
VERIFY_EMAIL_PATH = "/verify-email"
RESET_PASSWORD_PATH = "/reset-password"
ONBOARDING_PATH = "/onboarding"
SECURITY_PATH = "/settings/security"
STYLESHEET_PATH = "/assets/pages.css"
# Every path this module answers: the edge gives them the pages' security policy.
PAGE_PATHS = frozenset(
    {VERIFY_EMAIL_PATH, RESET_PASSWORD_PATH, ONBOARDING_PATH, SECURITY_PATH, STYLESHEET_PATH}
)
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 8
# How the fields of a refused request are named on a page.
_LABELS = {"token": "This link", "newPassword": "New password", "email": "Email address"}
MALFORMED_FORM = Kind(400, "malformed-form", "Malformed form", "The form could not be read.")
_STYLESHEET_FILE = Path(str(files("huntaze_gateway") / "static" / "pages.css"))

pages_router = APIRouter(include_in_schema=False)

_templates = Environment(
    loader=PackageLoader("huntaze_gateway", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
)


# What each page shows unless told otherwise (the templates know no undefined names).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "verify_email.html": {
        "token": "",
        "verified": False,
        "action": VERIFY_EMAIL_PATH,
        "onboarding_url": ONBOARDING_PATH,
    },
    "reset_password.html": {"token": "", "done": False, "action": RESET_PASSWORD_PATH},
    "security.html": {"sent": "", "action": SECURITY_PATH},
    "onboarding.html": {"docs_url": ""},
}


def _page(
    template: str, *, title: str, status: int = 200, errors: Iterable[str] = (), **values: Any
) -> HTMLResponse:
    html = _templates.get_template(template).render(
        product=PRODUCT,
        title=title,
        stylesheet=STYLESHEET_PATH,
        errors=list(errors),
        **{**_DEFAULTS[template], **values},
    )
    return HTMLResponse(html, status_code=status)


async def _form(request: Request) -> dict[str, str]:
    """The fields of a posted HTML form (the first value of each)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise ApiProblem(
            UNSUPPORTED_MEDIA_TYPE,
            code="UNSUPPORTED_MEDIA_TYPE",
            detail=f"Send the form as {FORM_MEDIA_TYPE}.",
        )
    try:
        fields = parse_qs(
            (await request.body()).decode(),
            keep_blank_values=True,
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiProblem(MALFORMED_FORM, code="MALFORMED_FORM") from exc
    return {name: values[0] for name, values in fields.items()}


def _refused(
    template: str, error: grpc.aio.AioRpcError, *, title: str, token: str = ""
) -> HTMLResponse:
    """The page again, with what its problem document would say. A refused link cannot be
    tried again, so its token goes; after an outage or a refused password it stays."""
    kind, _code, detail, violations = describe(from_rpc_error(error))
    refused = {v.field for v in violations}
    return _page(
        template,
        title=title,
        status=kind.status,
        errors=[f"{_LABELS.get(v.field, v.field)}: {v.description}" for v in violations]
        or [detail],
        token="" if "token" in refused else token,
    )


# ---------------------------------------------------------------------------------------------
# Email verification.

_VERIFY_TITLE = "Verify your email address"


@pages_router.get(VERIFY_EMAIL_PATH)
async def verify_email_page(token: str = "") -> HTMLResponse:
    """Asks for a click rather than verifying on open: mail scanners and link previews fetch
    every link in a message, and one of them would spend the token (and verify an address
    that nobody opened)."""
    if not token:
        return _page("verify_email.html", title="This link is incomplete", status=400)
    return _page("verify_email.html", title=_VERIFY_TITLE, token=token)


@pages_router.post(VERIFY_EMAIL_PATH)
async def verify_email_form(request: Request) -> HTMLResponse:
    token = (await _form(request)).get("token", "")
    runtime = runtime_of(request)
    try:
        await runtime.auth.VerifyEmail(auth_pb2.VerifyEmailRequest(token=token), **runtime.call())
    except grpc.aio.AioRpcError as error:
        return _refused("verify_email.html", error, title=_VERIFY_TITLE, token=token)
    return _page("verify_email.html", title="Email address verified", verified=True)


# ---------------------------------------------------------------------------------------------
# Password reset.

_RESET_TITLE = "Choose a new password"


@pages_router.get(RESET_PASSWORD_PATH)
async def reset_password_page(token: str = "") -> HTMLResponse:
    if not token:
        return _page("reset_password.html", title="This link is incomplete", status=400)
    return _page("reset_password.html", title=_RESET_TITLE, token=token)


@pages_router.post(RESET_PASSWORD_PATH)
async def reset_password_form(request: Request) -> HTMLResponse:
    fields = await _form(request)
    token = fields.get("token", "")
    new_password = fields.get("new_password", "")
    if fields.get("confirm_password", "") != new_password:
        return _page(
            "reset_password.html",
            title=_RESET_TITLE,
            status=422,
            errors=["The two passwords are not the same."],
            token=token,
        )
    runtime = runtime_of(request)
    try:
        await runtime.auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=token, new_password=new_password),
            **runtime.call(),
        )
    except grpc.aio.AioRpcError as error:
        return _refused("reset_password.html", error, title=_RESET_TITLE, token=token)
    answer = _page("reset_password.html", title="Password changed", done=True)
    # Every session was signed out: so is this browser.
    clear_token_cookies(answer, runtime.settings)
    return answer


# ---------------------------------------------------------------------------------------------
# Securing the account (the new-device sign-in alert's link).

_SECURITY_TITLE = "Secure your account"


@pages_router.get(SECURITY_PATH)
async def security_page() -> HTMLResponse:
    return _page("security.html", title=_SECURITY_TITLE)


@pages_router.post(SECURITY_PATH)
async def security_form(request: Request) -> HTMLResponse:
    email = (await _form(request)).get("email", "")
    runtime = runtime_of(request)
    try:
        await runtime.auth.RequestPasswordReset(
            auth_pb2.RequestPasswordResetRequest(email=email, client=client_context(request)),
            **runtime.call(),
        )
    except grpc.aio.AioRpcError as error:
        return _refused("security.html", error, title=_SECURITY_TITLE)
    return _page("security.html", title=_SECURITY_TITLE, sent=ACCEPTED_MESSAGE)


# ---------------------------------------------------------------------------------------------
# Onboarding, and the pages' stylesheet.


@pages_router.get(ONBOARDING_PATH)
async def onboarding_page(request: Request) -> HTMLResponse:
    """What a new creator does next (the welcome email's link)."""
    docs = runtime_of(request).settings.gateway_docs_enabled
    return _page(
        "onboarding.html", title=f"Welcome to {PRODUCT}", docs_url=DOCS_PATH if docs else ""
    )


@pages_router.get(STYLESHEET_PATH)
async def stylesheet() -> FileResponse:
    return FileResponse(
        _STYLESHEET_FILE, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )
