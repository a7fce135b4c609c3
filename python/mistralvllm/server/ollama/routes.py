"""Ollama's API under `/api/`, so Ollama's clients (Open WebUI, Continue, the
`ollama` Python client) work against this service. Errors come in Ollama's
shape, ``{"error": message}`` (`bodies.error_body`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ... import __version__
from ..deps import Service, require_key
from ..http_reply import send
from . import model_details, serving
from .bodies import (
    ChatResponse,
    EmbeddingsResponse,
    EmbedResponse,
    GenerateResponse,
    ListedModels,
    OllamaErrorBody,
    RunningModels,
    ShowResponse,
    Version,
)
from .requests import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, ShowRequest

router = APIRouter(
    prefix="/api", dependencies=[Depends(require_key)], responses={"4XX": {"model": OllamaErrorBody}, "5XX": {"model": OllamaErrorBody}}
)


@router.post("/chat", response_model=ChatResponse, response_model_exclude_unset=True)
async def chat(body: ChatRequest, request: Request, response: Response, state: Service) -> ChatResponse | Response:
    """A chat answer, streamed as JSON lines unless ``stream`` is false;
    ``X-Conversation-Id`` stores it in the history."""
    answer = await serving.chat(state, body, request.headers.get("x-conversation-id"))
    return answer if isinstance(answer, ChatResponse) else await send(answer, request, response)


@router.post("/generate", response_model=GenerateResponse, response_model_exclude_unset=True)
async def generate(body: GenerateRequest, request: Request, response: Response, state: Service) -> GenerateResponse | Response:
    """The answer to a prompt (or its raw continuation), streamed as JSON
    lines unless ``stream`` is false."""
    answer = await serving.generate(state, body, request.headers.get("x-conversation-id"))
    return answer if isinstance(answer, GenerateResponse) else await send(answer, request, response)


@router.get("/tags", response_model=ListedModels, response_model_exclude_none=True)
async def tags(state: Service) -> ListedModels:
    """Every configured model, loaded or not."""
    return ListedModels(models=[model_details.listed_model(model, await model_details.model_files(model)) for model in state.models.models])


@router.post("/show", response_model=ShowResponse, response_model_exclude_none=True)
async def show(body: ShowRequest, state: Service) -> ShowResponse:
    """The model's details, read from its session (loaded for it if need be)."""
    model = state.models.find(body.model_name)
    async with state.session_for(body.model_name, wait_for_startup=True) as session:
        return model_details.shown_model(session, await model_details.model_files(model))


@router.get("/ps", response_model=RunningModels, response_model_exclude_none=True)
async def ps(state: Service) -> RunningModels:
    """The models loaded now; none while the first one loads."""
    running = []
    for model in state.models.loaded():
        if (session := model.session) is not None:
            running.append(model_details.running_model(model, session, await model_details.model_files(model)))
    return RunningModels(models=running)


@router.get("/version", response_model=Version)
async def version() -> Version:
    return Version(version=__version__)


@router.post("/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, state: Service) -> EmbedResponse:
    """One vector per input, from an embedding model."""
    return await serving.embed(state, body)


@router.post("/embeddings", response_model=EmbeddingsResponse)
async def embeddings(body: EmbeddingsRequest, state: Service) -> EmbeddingsResponse:
    """The prompt's vector: Ollama's older embedding route."""
    return await serving.embeddings_of_prompt(state, body)
