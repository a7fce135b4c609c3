"""What every request passes through before a route: bodies read as JSON
whatever their content type, the body-size limit, and the request counter
(with a log line for requests no route logged)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api_error import APIError
from .exception_handlers import error_response

log = logging.getLogger("mistralvllm.server")


# The content types FastAPI reads as JSON (its own test: application/json or
# application/*+json).
JSON_CONTENT_TYPE = b"application/json"


def _is_json(content_type: bytes) -> bool:
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == JSON_CONTENT_TYPE or (media_type.startswith(b"application/") and media_type.endswith(b"+json"))


class JsonBodies:
    """Read every request body as JSON, as Ollama and llama-server do:
    ``curl -d`` sends ``application/x-www-form-urlencoded`` and some clients
    send ``text/plain`` or nothing, and FastAPI would hand such a body to the
    route as bytes (a 400 that says "Input should be a valid dictionary").
    Every route here takes JSON, so any other content type is taken for it; a
    body that is not JSON stays a 400 ("JSON decode error")."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            content_type = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
            if not _is_json(content_type):
                headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
                scope = {**scope, "headers": [*headers, (b"content-type", JSON_CONTENT_TYPE)]}
        await self.app(scope, receive, send)


class BodyLimit:
    """Answer 413 to request bodies over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error_response(APIError(413, f"request body is larger than {self.limit} bytes", code="request_too_large"), Request(scope))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except _BodyTooLarge:
            await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Count each API request by path and status; log the POSTs that ended
    before the serving layer wrote their line (errors)."""
    response = await call_next(request)
    if request.url.path.startswith(("/v1/", "/api/")):
        request.app.state.service.metrics.requests.labels(request.url.path, str(response.status_code)).inc()
        if request.method == "POST" and response.status_code >= 400 and not getattr(request.state, "logged", False):
            log.info("%s %s: error %d", request.method, request.url.path, response.status_code)
    return response
