"""`POST /v1/chat/completions` and `POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..deps import Service, require_key
from ..http_reply import send
from . import serving
from .bodies import ChatCompletion, Completion, ErrorBody
from .requests import ChatCompletionRequest, CompletionRequest

router = APIRouter(dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorBody}, "5XX": {"model": ErrorBody}})


@router.post("/v1/chat/completions", response_model=ChatCompletion, response_model_exclude_unset=True)
async def chat_completions(body: ChatCompletionRequest, request: Request, response: Response, state: Service) -> ChatCompletion | Response:
    """A chat answer, whole or streamed as server-sent events (``stream``);
    ``X-Conversation-Id`` (or ``user``) stores it in the history."""
    reply = await serving.chat_completion(state, body, request.headers.get("x-conversation-id"))
    return await send(reply, request, response)


@router.post("/v1/completions", response_model=Completion, response_model_exclude_unset=True)
async def completions(body: CompletionRequest, request: Request, response: Response, state: Service) -> Completion | Response:
    """The continuation of raw text (no chat template), whole or streamed."""
    return await send(await serving.completion(state, body), request, response)
