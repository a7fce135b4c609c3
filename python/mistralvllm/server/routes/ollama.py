"""Ollama's API under `/api/`, so Ollama's clients (Open WebUI, Continue, the
`ollama` Python client) work against this service. Errors come in Ollama's
shape, ``{"error": message}`` (`ollama_serving.error_body`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from ... import __version__
from ...session import Session
from .. import ollama_models, ollama_serving, serving
from ..api_error import APIError
from ..deps import Service, ready_session, require_key
from ..ollama_requests import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, ShowRequest
from ..ollama_responses import ChatResponse, ErrorBody, GenerateResponse, ModelList, RunningModels, ShowResponse, Version
from .reply import send

router = APIRouter(prefix="/api", dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorBody}, "5XX": {"model": ErrorBody}})

Ready = Annotated[Session, Depends(ready_session)]


@router.post("/chat", response_model=ChatResponse, response_model_exclude_unset=True)
async def chat(body: ChatRequest, request: Request, response: Response, state: Service) -> ChatResponse | Response:
    """A chat answer, streamed as JSON lines unless ``stream`` is false;
    ``X-Conversation-Id`` stores it in the history."""
    answer = await ollama_serving.chat(state, body, request.headers.get("x-conversation-id"))
    return answer if isinstance(answer, ChatResponse) else await send(answer, request, response)


@router.post("/generate", response_model=GenerateResponse, response_model_exclude_unset=True)
async def generate(body: GenerateRequest, request: Request, response: Response, state: Service) -> GenerateResponse | Response:
    """The answer to a prompt (or its raw continuation), streamed as JSON
    lines unless ``stream`` is false."""
    answer = await ollama_serving.generate(state, body, request.headers.get("x-conversation-id"))
    return answer if isinstance(answer, GenerateResponse) else await send(answer, request, response)


@router.get("/tags", response_model=ModelList, response_model_exclude_none=True)
async def tags(state: Service, session: Ready) -> ModelList:
    """The one model this service serves."""
    return ModelList(models=[ollama_models.listed_model(state, session, await ollama_models.model_files(session))])


@router.post("/show", response_model=ShowResponse, response_model_exclude_none=True)
async def show(body: ShowRequest, state: Service, session: Ready) -> ShowResponse:
    serving.check_model_name(state, ollama_models.served_name(state, body.model_name))
    return ollama_models.shown_model(session, await ollama_models.model_files(session))


@router.get("/ps", response_model=RunningModels, response_model_exclude_none=True)
async def ps(state: Service) -> RunningModels:
    """The model once it is loaded; none while it loads."""
    if (session := state.session) is None:
        return RunningModels(models=[])
    return RunningModels(models=[ollama_models.running_model(state, session, await ollama_models.model_files(session))])


@router.get("/version", response_model=Version)
async def version() -> Version:
    return Version(version=__version__)


def no_embeddings(state: Service, model: str) -> APIError:
    serving.check_model_name(state, ollama_models.served_name(state, model))
    return APIError(
        501,
        f"{state.model_id} is a chat model, and this engine computes no embeddings with it; use an embedding model served elsewhere",
        type="not_implemented",
    )


@router.post("/embed", responses={501: {"model": ErrorBody}})
async def embed(body: EmbedRequest, state: Service, _: Ready) -> None:
    """Always 501: the engine here cannot embed with a chat model."""
    raise no_embeddings(state, body.model)


@router.post("/embeddings", responses={501: {"model": ErrorBody}})
async def embeddings(body: EmbeddingsRequest, state: Service, _: Ready) -> None:
    """Always 501, as `/api/embed`."""
    raise no_embeddings(state, body.model)
