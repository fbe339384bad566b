"""Signing in, the ways it really happens: the login page (email and password, then an optional bot
challenge, then an optional OTP code) and the JSON calls behind it (`POST /users/login`, which
answers code 101 when an OTP is needed, then `POST /users/otp/check`).

The bot challenge is a page no script can pass: only the control API marks it solved (a person's
action in tests and the demo). Stable selectors of every page are listed in the README.
"""

from __future__ import annotations

import base64
import binascii
import html
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from huntaze_simulator import errors, views
from huntaze_simulator.api import ws_url
from huntaze_simulator.guard import PlatformDep, SignedPlatform
from huntaze_simulator.model import Session
from huntaze_simulator.platform import BROWSER_TOKEN, Platform

OTP_DIGITS = 6
CAPTCHA_FIELDS = (
    "turnstile-invisible-response",
    "e-recaptcha-response",
    "ec-recaptcha-response",
    "g-recaptcha-response",
)
WRONG_CREDENTIALS = "Wrong email or password"
CODE_WRONG = "Code wrong"


@dataclass
class Attempt:
    """A login through the pages, between the password and the session."""

    id: str
    user_agent: str
    x_bc: str | None
    challenge_solved: bool = False
    otp_code: str | None = None


@dataclass
class LoginDesk:
    """Login state that is never persisted: attempts, challenges and issued codes."""

    attempts: dict[str, Attempt] = field(default_factory=dict)
    # Captcha tokens a person produced (through the control API), each good for one login.
    captcha_tokens: set[str] = field(default_factory=set)
    # OTP codes of sessions waiting for one (JSON login), by `sess`.
    pending_codes: dict[str, str] = field(default_factory=dict)
    latest_code: str | None = None

    def issue_code(self) -> str:
        code = "".join(secrets.choice("0123456789") for _ in range(OTP_DIGITS))
        self.latest_code = code
        return code


async def desk_of(request: Request) -> LoginDesk:
    desk: LoginDesk = request.app.state.login_desk
    return desk


DeskDep = Annotated[LoginDesk, Depends(desk_of)]

router = APIRouter()


def session_cookies(session: Session) -> dict[str, str]:
    """The cookies a signed-in browser holds (what session import copies)."""
    return {
        "sess": session.sess,
        "auth_id": str(session.user_id),
        "fp": session.x_bc,
        "csrf": session.csrf,
        "st": session.st,
        "lang": "en",
        "cookiesAccepted": "all",
    }


def set_session_cookies(response: Response, session: Session) -> None:
    for name, value in session_cookies(session).items():
        response.set_cookie(name, value, path="/", samesite="lax", httponly=name == "sess")


def credentials_match(platform: Platform, *, email: str, password: str) -> bool:
    creator = platform.data.creator
    return secrets.compare_digest(email.strip().lower(), creator.email.lower()) and (
        secrets.compare_digest(password, creator.password)
    )


# Pages ---------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main id="{page_id}">
<h1>{title}</h1>
{body}
</main></body></html>"""

# The browser's own token (`bcTokenSha`), sent as `x-bc` and bound to the session at login.
BC_TOKEN_SCRIPT = """<script>
(function () {
  var token = localStorage.getItem("bcTokenSha");
  if (!token) {
    var bytes = new Uint8Array(20);
    crypto.getRandomValues(bytes);
    token = Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
    localStorage.setItem("bcTokenSha", token);
  }
  document.getElementById("bc-token").value = token;
})();
</script>"""


def page(*, title: str, page_id: str, body: str) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=title, page_id=page_id, body=body))


def error_line(error_id: str, message: str | None) -> str:
    if message is None:
        return ""
    return f'<p id="{error_id}" class="b-error" role="alert">{html.escape(message)}</p>'


def login_page(error: str | None = None) -> HTMLResponse:
    return page(
        title="Log in",
        page_id="login-page",
        body=f"""{error_line("login-error", error)}
<form id="login-form" method="post" action="/login">
  <label for="email">Email</label>
  <input id="email" name="email" type="email" autocomplete="username" required>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  <input id="bc-token" name="bc" type="hidden" value="">
  <button id="login-submit" type="submit">Log in</button>
</form>
{BC_TOKEN_SCRIPT}""",
    )


def challenge_page(attempt: Attempt, error: str | None = None) -> HTMLResponse:
    return page(
        title="Verify you are human",
        page_id="challenge-page",
        body=f"""{error_line("challenge-error", error)}
<div id="bot-challenge" data-challenge-id="{attempt.id}">
  <p>Complete the security check to continue.</p>
</div>
<form id="challenge-form" method="post" action="/login/challenge">
  <input name="attempt" type="hidden" value="{attempt.id}">
  <button id="challenge-continue" type="submit">Continue</button>
</form>""",
    )


def otp_page(attempt: Attempt, error: str | None = None) -> HTMLResponse:
    return page(
        title="Two-step verification",
        page_id="otp-page",
        body=f"""{error_line("otp-error", error)}
<form id="otp-form" method="post" action="/login/otp">
  <label for="otp-code">Code</label>
  <input id="otp-code" name="code" inputmode="numeric" autocomplete="one-time-code" required>
  <input name="attempt" type="hidden" value="{attempt.id}">
  <button id="otp-submit" type="submit">Verify</button>
</form>""",
    )


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form body (what the pages post), first value of each field."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def next_step(platform: Platform, desk: LoginDesk, attempt: Attempt) -> Response:
    """After each passed step: the challenge, then the OTP code, then the session."""
    if platform.config.bot_challenge and not attempt.challenge_solved:
        return challenge_page(attempt)
    if platform.config.otp_required:
        if attempt.otp_code is None:
            attempt.otp_code = desk.issue_code()
        return otp_page(attempt)
    return finish(platform, desk, attempt)


def finish(platform: Platform, desk: LoginDesk, attempt: Attempt) -> Response:
    desk.attempts.pop(attempt.id, None)
    session = platform.open_session(user_agent=attempt.user_agent, x_bc=attempt.x_bc)
    response = RedirectResponse("/", status_code=303)
    set_session_cookies(response, session)
    return response


@router.get("/login", response_class=HTMLResponse)
async def show_login() -> HTMLResponse:
    return login_page()


@router.post("/login")
async def submit_login(request: Request, platform: PlatformDep, desk: DeskDep) -> Response:
    form = await form_of(request)
    if not credentials_match(
        platform, email=form.get("email", ""), password=form.get("password", "")
    ):
        return login_page(WRONG_CREDENTIALS)
    attempt = Attempt(
        id=secrets.token_urlsafe(12),
        user_agent=request.headers.get("user-agent", ""),
        # A page without its script (or a forged token) gets a token from the platform.
        x_bc=form.get("bc") if BROWSER_TOKEN.fullmatch(form.get("bc", "")) else None,
    )
    desk.attempts[attempt.id] = attempt
    return next_step(platform, desk, attempt)


@router.post("/login/challenge")
async def submit_challenge(request: Request, platform: PlatformDep, desk: DeskDep) -> Response:
    attempt = desk.attempts.get((await form_of(request)).get("attempt", ""))
    if attempt is None:
        return login_page("Your login expired, please try again")
    if not attempt.challenge_solved:
        return challenge_page(attempt, "Captcha wrong")
    return next_step(platform, desk, attempt)


@router.post("/login/otp")
async def submit_otp(request: Request, platform: PlatformDep, desk: DeskDep) -> Response:
    form = await form_of(request)
    attempt = desk.attempts.get(form.get("attempt", ""))
    if attempt is None or attempt.otp_code is None:
        return login_page("Your login expired, please try again")
    if not secrets.compare_digest(form.get("code", "").strip(), attempt.otp_code):
        return otp_page(attempt, CODE_WRONG)
    return finish(platform, desk, attempt)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, platform: PlatformDep) -> Response:
    """The signed-in home page: `.b-feed` marks it, `bcTokenSha` holds the session's x-bc, and its
    script calls the API the way the web client does (signed XHRs a worker can observe)."""
    session = platform.live_session(request.cookies.get("sess"))
    if session is None or not session.authenticated:
        return RedirectResponse("/login", status_code=303)
    creator = platform.data.creator
    return page(
        title="Home",
        page_id="home-page",
        body=f"""<div class="b-feed" data-user-id="{creator.id}">
  <p>Signed in as <span id="username">{html.escape(creator.username)}</span></p>
  <ul class="b-chats" id="chats"></ul>
</div>
<script>localStorage.setItem("bcTokenSha", "{session.x_bc}");</script>
{WEB_CLIENT_SCRIPT}""",
    )


# The web client's part that matters to a worker: it signs each call under the published rules
# (SHA-1 through WebCrypto) and sends the browser's x-bc, then lists the recent chats.
WEB_CLIENT_SCRIPT = """<script>
(function () {
  var rulesPromise = fetch("/rules.json").then(function (r) { return r.json(); });
  function cookie(name) {
    var found = document.cookie.split("; ").find(function (c) { return c.startsWith(name + "="); });
    return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
  }
  async function sha1hex(text) {
    var digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
    return Array.from(new Uint8Array(digest), function (b) {
      return b.toString(16).padStart(2, "0");
    }).join("");
  }
  async function api(pathAndQuery) {
    var rules = await rulesPromise;
    var time = String(Date.now());
    var userId = cookie("auth_id") || "0";
    var sha = await sha1hex([rules.static_param, time, pathAndQuery, userId].join("\\n"));
    var total = rules.checksum_constant;
    rules.checksum_indexes.forEach(function (i) { total += sha.charCodeAt(i); });
    var sign = [rules.prefix, sha, Math.abs(total).toString(16), rules.suffix].join(":");
    var response = await fetch(pathAndQuery, {headers: {
      "accept": "application/json, text/plain, */*", "app-token": rules.app_token,
      "sign": sign, "time": time, "user-id": userId,
      "x-bc": localStorage.getItem("bcTokenSha")
    }});
    return response.json();
  }
  window.platformApi = api;
  api("/api2/v2/users/me").then(function () {
    return api("/api2/v2/chats?limit=10&offset=0&order=recent&skip_users=all");
  }).then(function (chats) {
    var list = document.getElementById("chats");
    chats.list.forEach(function (chat) {
      var item = document.createElement("li");
      item.className = "b-chats__item";
      item.dataset.userId = chat.withUser.id;
      item.dataset.unread = chat.unreadMessagesCount;
      // An inert document: the message's HTML is read as text, never run.
      var html = chat.lastMessage ? chat.lastMessage.text : "";
      item.textContent = new DOMParser().parseFromString(html, "text/html").body.textContent;
      list.appendChild(item);
    });
    list.dataset.loaded = "true";
  });
})();
</script>"""


@router.post("/logout")
async def logout(request: Request, platform: PlatformDep) -> Response:
    platform.end_session(request.cookies.get("sess", ""))
    return RedirectResponse("/login", status_code=303)


# The JSON calls behind the page --------------------------------------------------------------


def _password_of(body: dict[str, Any]) -> str:
    encoded = body.get("encodedPassword")
    if isinstance(encoded, str):
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
    password = body.get("password")
    return password if isinstance(password, str) else ""


@router.post("/api2/v2/users/login")
async def api_login(request: Request, platform: SignedPlatform, desk: DeskDep) -> Response:
    """Signed with user id 0. Answers the user (and its cookies), or code 101 with a session that
    waits for `POST /users/otp/check`."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise errors.bad_request("Invalid request")
    if platform.config.bot_challenge:
        tokens = {body.get(name) for name in CAPTCHA_FIELDS} - {None, ""}
        solved = next((token for token in tokens if token in desk.captcha_tokens), None)
        if solved is None:
            raise errors.captcha_wrong()
        desk.captcha_tokens.discard(solved)
    email = body.get("email")
    if not credentials_match(
        platform, email=email if isinstance(email, str) else "", password=_password_of(body)
    ):
        raise errors.bad_request(WRONG_CREDENTIALS)
    session = platform.open_session(
        user_agent=request.headers.get("user-agent", ""),
        x_bc=request.headers.get("x-bc"),
        authenticated=not platform.config.otp_required,
    )
    if platform.config.otp_required:
        desk.pending_codes[session.sess] = desk.issue_code()
        needed = errors.otp_required()
        response: Response = JSONResponse(
            {"error": {"code": needed.code, "message": needed.message}}, status_code=needed.status
        )
    else:
        response = JSONResponse(views.me(platform, session, ws_url=ws_url(request)))
    set_session_cookies(response, session)
    return response


@router.post("/api2/v2/users/otp/check")
async def api_otp_check(request: Request, platform: SignedPlatform, desk: DeskDep) -> Response:
    session = platform.live_session(request.cookies.get("sess"))
    if session is None:
        raise errors.unauthorized()
    try:
        body = await request.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    expected = desk.pending_codes.get(session.sess)
    if expected is None or not isinstance(code, str | int):
        raise errors.bad_request(CODE_WRONG)
    if not secrets.compare_digest(str(code).strip(), expected):
        raise errors.bad_request(CODE_WRONG)
    del desk.pending_codes[session.sess]
    session.authenticated = True
    return JSONResponse(views.me(platform, session, ws_url=ws_url(request)))
