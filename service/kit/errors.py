"""The base of every domain error. Each carries its HTTP status and the contract's error code,
so one exception handler renders `{"error": {"code", "message"}}` and nothing below the routes
knows about HTTP."""

from __future__ import annotations


class AppError(Exception):
    status_code: int = 400
    code: str = "BAD_REQUEST"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class NotFound(AppError):
    status_code = 404
    code = "NOT_FOUND"


class Conflict(AppError):
    status_code = 409
    code = "CONFLICT"


class Unprocessable(AppError):
    status_code = 422
    code = "UNPROCESSABLE"


class Unavailable(AppError):
    status_code = 503
    code = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
