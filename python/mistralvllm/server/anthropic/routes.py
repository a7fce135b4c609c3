"""`POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages
API, translated into a chat request for the serving layer and answered in
Anthropic's bodies (`serving.MessageShape`); its errors in Anthropic's shape
(`bodies.error_body`, registered by the app)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..deps import Service, require_key
from ..http_reply import send
from . import serving
from .bodies import ErrorResponse, Message, TokenCount
from .requests import CountTokensRequest, MessagesRequest

PREFIX = "/v1/messages"

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorResponse}, "5XX": {"model": ErrorResponse}})


@router.post("", response_model=Message)
async def messages(body: MessagesRequest, request: Request, response: Response, state: Service) -> Message | Response:
    """An answer, whole or streamed as Anthropic's server-sent events
    (``stream``); ``X-Conversation-Id`` (or ``metadata.user_id``) stores it in the history."""
    reply = await serving.message(state, body, request.headers.get("x-conversation-id"))
    return await send(reply, request, response)


@router.post("/count_tokens", response_model=TokenCount)
async def count_tokens(body: CountTokensRequest, state: Service) -> TokenCount:
    """The tokens the request's prompt takes, as its answer's ``usage.input_tokens`` counts them."""
    return TokenCount(input_tokens=await serving.input_tokens(state, body))
