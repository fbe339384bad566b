"""The platform's error answers: `{"error": {"code", "message"}}`, usually under HTTP 400 even when
the body's code says 401 (what public clients record)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse


class PlatformError(Exception):
    def __init__(self, *, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def wrong_user() -> PlatformError:
    return PlatformError(status=400, code=301, message="Wrong user.")


def refresh_the_page() -> PlatformError:
    return PlatformError(status=400, code=401, message="Please refresh the page")


def app_token_required() -> PlatformError:
    return PlatformError(status=400, code=0, message="Application token is required.")


def unauthorized() -> PlatformError:
    return PlatformError(status=401, code=401, message="Unauthorized")


def too_many_requests() -> PlatformError:
    return PlatformError(status=429, code=429, message="Too many requests. Try again later")


def allow_three_seconds() -> PlatformError:
    # The platform's text; its status and code are not documented, 400 fits its habit.
    return PlatformError(status=400, code=0, message="Allow 3 seconds")


def otp_required() -> PlatformError:
    return PlatformError(status=400, code=101, message="Two-factor authentication required")


def captcha_wrong() -> PlatformError:
    return PlatformError(status=400, code=102, message="Captcha wrong")


def bad_request(message: str) -> PlatformError:
    return PlatformError(status=400, code=0, message=message)


def not_found(message: str) -> PlatformError:
    return PlatformError(status=404, code=0, message=message)


async def platform_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PlatformError)
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status
    )
