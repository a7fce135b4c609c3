"""Every error the service answers: `APIError`s raised by routes and the
serving layer, bodies that fail validation (400 naming the field), and
Starlette's own errors (404 unknown path, 405, bodies it cannot parse).

They are answered in OpenAI's shape, except under a path that another API
owns (Ollama's ``/api/``, Anthropic's ``/v1/messages``): its module registers
the shape its clients parse with `add_error_shape`."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .api_error import APIError

# An API's error body for an `APIError` (its status and headers stay).
ErrorShape = Callable[[APIError], dict[str, object]]


def add_error_shape(app: FastAPI, path_prefix: str, shape: ErrorShape) -> None:
    """Answer errors of requests under ``path_prefix`` with ``shape``'s body."""
    app.state.error_shapes = [*getattr(app.state, "error_shapes", []), (path_prefix, shape)]


def error_response(error: APIError, request: Request | None = None) -> JSONResponse:
    """``error`` in the shape of the API that ``request``'s path belongs to."""
    body: dict[str, object] = error.body()
    if request is not None:
        for prefix, shape in getattr(request.app.state, "error_shapes", []):
            if request.url.path.startswith(prefix):
                body = shape(error)
                break
    return JSONResponse(body, status_code=error.status, headers=error.headers())


async def api_error(request: Request, error: APIError) -> JSONResponse:
    return error_response(error, request)


async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """400 naming each field that failed (``messages.0.role: ...``); ``param`` is the first."""
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"] if part != "body"]
        problems.append((".".join(loc), item["msg"]))
    param = problems[0][0] if problems else None
    message = "; ".join(f"{field}: {msg}" if field else msg for field, msg in problems)
    return error_response(APIError(400, message, param=param or None), request)


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    return error_response(APIError(error.status_code, _body_problem(error.__cause__) or str(error.detail), type=kind), request)


def _body_problem(cause: BaseException | None) -> str | None:
    """What was wrong with a body FastAPI could not parse (it says only
    "There was an error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not valid UTF-8 (byte {cause.object[cause.start]:#04x} at position {cause.start}); send JSON in UTF-8"
    if isinstance(cause, RecursionError):
        return "the request body's JSON is nested too deeply to parse"
    return None


def add_exception_handlers(app: FastAPI) -> None:
    # Through FastAPI's decorator: Starlette's add_exception_handler is typed
    # for handlers of any Exception, not of one class.
    app.exception_handler(APIError)(api_error)
    app.exception_handler(RequestValidationError)(bad_request)
    app.exception_handler(HTTPException)(http_error)
