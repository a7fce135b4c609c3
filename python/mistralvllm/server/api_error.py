"""`APIError`: an error answered in OpenAI's shape, raised anywhere from a
route to the serving layer (it knows nothing of FastAPI); `engine_errors`
answers a session's request errors as one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ContextOverflowError, RequestError
from .openai.bodies import ErrorBody, ErrorDetail

T = TypeVar("T")


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


def api_error(error: RequestError) -> APIError:
    """A session's request error as the service answers it."""
    if isinstance(error, ContextOverflowError):
        return APIError(400, str(error), param="messages", code="context_length_exceeded")
    return APIError(400, str(error))


def engine_errors(call: Callable[[], T]) -> T:
    """Run ``call``, answering the session's request errors in OpenAI's shape."""
    try:
        return call()
    except RequestError as e:
        raise api_error(e) from None
