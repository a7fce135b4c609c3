"""Request bodies of the service's own routes: vLLM's `/tokenize` and
`/detokenize`, and renaming a stored conversation."""

from __future__ import annotations

from pydantic import Field, StrictBool, model_validator

from ..openai.requests import ChatMessage
from ..request_body import RequestBody


class TokenizeRequest(RequestBody):
    """`POST /tokenize` (vLLM's): a raw ``prompt`` or chat ``messages``."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: StrictBool = True
    # vLLM's defaults: true for a prompt, false for messages (the template writes them).
    add_special_tokens: StrictBool | None = None

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self


class DetokenizeRequest(RequestBody):
    """`POST /detokenize` (vLLM's)."""

    model: str | None = None
    tokens: list[int]


class RenameRequest(RequestBody):
    """`PATCH /v1/conversations/{id}`: a new title."""

    title: str = Field(max_length=200)
