"""`POST /v1/chat/completions`, `POST /v1/completions` and `POST /v1/embeddings`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..deps import Service, require_key
from ..http_reply import send
from ..serving import embeddings
from . import serving
from .bodies import ChatCompletion, Completion, EmbeddingData, EmbeddingList, EmbeddingUsage, ErrorBody
from .requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

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


@router.post("/v1/embeddings", response_model=EmbeddingList)
async def create_embeddings(body: EmbeddingRequest, state: Service) -> EmbeddingList:
    """The embeddings of the inputs, in order, from an embedding model."""
    lease = await state.use(body.model)
    name = lease.name
    found = await embeddings(lease, body.inputs(), dimensions=body.dimensions)
    data = [EmbeddingData(index=index, embedding=e.base64() if body.encoding_format == "base64" else list(e.vector)) for index, e in enumerate(found)]
    tokens = sum(e.prompt_tokens for e in found)
    return EmbeddingList(data=data, model=name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
