"""`APIError`: an error answered in OpenAI's shape, raised anywhere from a
route to the serving layer (it knows nothing of FastAPI)."""

from __future__ import annotations

from typing import Any

from .openai_responses import ErrorBody, ErrorDetail


class APIError(Exception):
    """An error answered with ``status`` and OpenAI's error object."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        """The error object, as answered and as sent in a server-sent event."""
        return ErrorBody(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)).model_dump()

    def headers(self) -> dict[str, str]:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.code == "request_timeout":
            # The openai client retries 5xx answers unless told not to, which
            # would run the same long request again, twice.
            headers["x-should-retry"] = "false"
        return headers
