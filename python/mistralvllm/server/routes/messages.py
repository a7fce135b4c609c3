"""`POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages
API, translated into a chat request for the serving layer and answered in
Anthropic's bodies (`MessageShape`); its errors in Anthropic's shape
(`anthropic_responses.error_body`, registered by the app)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from .. import serving
from ..anthropic_requests import CountTokensRequest, MessagesRequest
from ..anthropic_responses import ErrorResponse, Message, TokenCount
from ..anthropic_shape import MessageShape
from ..deps import Service, require_key
from .reply import send

PREFIX = "/v1/messages"
MESSAGE_ID_PREFIX = "msg_"

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorResponse}, "5XX": {"model": ErrorResponse}})


@router.post("", response_model=Message)
async def messages(body: MessagesRequest, request: Request, response: Response, state: Service) -> Message | Response:
    """An answer, whole or streamed as Anthropic's server-sent events
    (``stream``); ``X-Conversation-Id`` (or ``metadata.user_id``) stores it in the history."""
    reply = await serving.chat_reply(state, body.chat_request(), request.headers.get("x-conversation-id"), MessageShape, id_prefix=MESSAGE_ID_PREFIX)
    return await send(reply, request, response)


@router.post("/count_tokens", response_model=TokenCount)
async def count_tokens(body: CountTokensRequest, state: Service) -> TokenCount:
    """The tokens the request's prompt takes, as its answer's ``usage.input_tokens`` counts them."""
    return TokenCount(input_tokens=await serving.prompt_tokens(state, body.chat_request()))
