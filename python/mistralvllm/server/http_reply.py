"""Sending a serving `Reply` over HTTP: whole as JSON (the route's
``response_model``), or streamed in its shape's format (server-sent events,
Ollama's JSON lines)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from .generation import ClientDisconnected
from .reply import Reply, W


async def send(reply: Reply[W], request: Request, response: Response) -> W | Response:
    """``reply`` streamed if the request asked to stream; else
    its whole body, with its headers set on ``response``, or 499 if the client
    left first."""
    request.state.logged = True  # the reply writes this request's log line
    if reply.stream:
        return StreamingResponse(reply.events(), media_type=reply.shape.media_type, headers={**reply.headers, "Cache-Control": "no-cache"})
    try:
        body = await reply.whole(request.receive)
    except ClientDisconnected:
        return Response(status_code=499)  # nobody reads it (nginx's "client closed request")
    response.headers.update(reply.headers)
    return body
