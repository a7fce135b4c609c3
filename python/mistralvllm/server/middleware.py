"""What every request passes through before a route: the body-size limit,
and the request counter (with a log line for requests no route logged)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api_error import APIError
from .exception_handlers import error_response

log = logging.getLogger("mistralvllm.server")


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
