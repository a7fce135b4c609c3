"""Response bodies of the service's own routes, as pydantic models, so that
/docs describes what is sent: health, the model list, tokens, and the stored
conversations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from ...history import ConversationSummary, StoredMessage


class Tokenized(BaseModel):
    """`POST /tokenize`, as vLLM answers it."""

    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None


class Detokenized(BaseModel):
    prompt: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "mistralvllm"


class ModelList(BaseModel):
    """`GET /v1/models`: every configured model."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelStatus(BaseModel):
    """One configured model in `/health`: loaded or not, and until when."""

    name: str
    aliases: list[str]
    loaded: bool
    size: int | None = Field(None, description="Bytes of the model's files (left out while not readable)")
    expires_at: str | None = Field(None, description="When it unloads if idle until then; left out while requests run or if it stays loaded")
    requests: int = Field(description="Requests holding it now")
    error: str | None = None


class Health(BaseModel):
    """`GET /health`: ``ok`` with the start-up model, or ``loading``/``failed``
    (503) with the load error; and every configured model's status."""

    status: Literal["ok", "loading", "failed"]
    model: str | None = None
    error: str | None = None
    models: list[ModelStatus] = Field(default_factory=list)


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ConversationSummary]


@dataclass(frozen=True)
class ConversationDetail(ConversationSummary):
    """A stored conversation with its messages."""

    messages: list[StoredMessage]


class Renamed(BaseModel):
    id: str
    title: str


class Deleted(BaseModel):
    id: str
    deleted: Literal[True] = True
