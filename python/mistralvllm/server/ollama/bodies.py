"""Response bodies of the Ollama API subset, as pydantic models, so that
/docs describes what is sent, and Ollama's error shape for every error under
``/api/``.

Answers are sent with ``exclude_unset`` (a streamed line that is not the last
has no ``done_reason`` nor timings), model descriptions with ``exclude_none``
(what is not known about the model is left out). Durations are nanoseconds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..api_error import APIError


class Answer(BaseModel):
    """What every line of an answer has; the last one (``done``) has why it
    stopped and the request's timings."""

    model: str
    created_at: str
    done: bool
    done_reason: Literal["stop", "length", "load", "unload"] | None = None
    total_duration: int | None = None
    load_duration: int | None = Field(None, description="Time this request waited for the model to load")
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class AnswerToolCallFunction(BaseModel):
    index: int
    name: str
    arguments: dict[str, Any]


class AnswerToolCall(BaseModel):
    id: str
    function: AnswerToolCallFunction


class AnswerMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None  # a thinking model's reasoning (think: true)
    tool_calls: list[AnswerToolCall] | None = None


class ChatResponse(Answer):
    """`POST /api/chat`: the whole answer, or one JSON line of it."""

    message: AnswerMessage


class GenerateResponse(Answer):
    """`POST /api/generate`: the whole answer, or one JSON line of it."""

    response: str
    thinking: str | None = None


class ModelDetails(BaseModel):
    format: str | None = None
    family: str | None = None
    families: list[str] | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None


class ListedModel(BaseModel):
    name: str
    model: str
    modified_at: str | None = None
    size: int | None = Field(None, description="Bytes of the model's files")
    details: ModelDetails


class ListedModels(BaseModel):
    """`GET /api/tags`: every configured model, loaded or not."""

    models: list[ListedModel]


class RunningModel(BaseModel):
    name: str
    model: str
    size: int | None = Field(None, description="Bytes of the model's files")
    details: ModelDetails
    expires_at: str | None = Field(None, description="When it unloads if idle until then; left out while requests run or if it stays loaded")
    context_length: int | None = None
    size_vram: int | None = Field(None, description="0 on a CPU; left out where not known")


class RunningModels(BaseModel):
    """`GET /api/ps`: the models loaded now (not those being loaded)."""

    models: list[RunningModel]


class ShowResponse(BaseModel):
    """`POST /api/show`."""

    details: ModelDetails
    model_info: dict[str, Any] = Field(description="The GGUF file's key-values (arrays left out), or what is known of a plain model")
    capabilities: list[str]
    modified_at: str | None = None


class EmbedResponse(BaseModel):
    """`POST /api/embed`: one vector per input, in order."""

    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int = Field(description="Time this request waited for the model to load")
    prompt_eval_count: int


class EmbeddingsResponse(BaseModel):
    """`POST /api/embeddings`: the prompt's vector."""

    embedding: list[float]


class Version(BaseModel):
    """`GET /api/version`: mistralvllm's version (this is not an Ollama build)."""

    version: str


class OllamaErrorBody(BaseModel):
    """Every error under /api/, in Ollama's shape."""

    error: str


def error_body(error: APIError) -> dict[str, Any]:
    """An error in Ollama's shape: ``{"error": message}``."""
    return {"error": error.message}
