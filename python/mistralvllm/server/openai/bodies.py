"""Response bodies of OpenAI's chat and text completions, and OpenAI's error
shape (the service's default one), as pydantic models, so that /docs
describes what is sent.

Chat and text completions are sent with ``exclude_unset``: a field left out
when the body is built is not sent (``tool_calls`` without calls, ``usage``
on a streamed chunk), so the fields that are always sent have no default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens whose KV cache the prefix cache supplied


class UsageBody(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class FunctionCallBody(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallBody(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallBody


class ToolCallDelta(BaseModel):
    """A tool call in a streamed chunk: OpenAI's call with its place in the list."""

    index: int
    id: str
    type: Literal["function"]
    function: FunctionCallBody


class AssistantMessage(BaseModel):
    """The answer; a thinking model's reasoning in ``reasoning_content``
    (mistral.rs's and llama-server's name) and ``reasoning`` (vLLM's)."""

    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallBody] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class TopLogprobBody(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobBody(TopLogprobBody):
    top_logprobs: list[TopLogprobBody]


class ChatLogprobs(BaseModel):
    """A chat choice's ``logprobs``: one entry per generated token."""

    content: list[TokenLogprobBody] | None
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None


class CompletionHead(BaseModel):
    """The fields every chat or text completion body starts with (the
    serving layer's ``head``, and the body's ``object``)."""

    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str  # fp_ and the digest of the settings that shape answers


class ChatCompletion(CompletionHead):
    """`POST /v1/chat/completions`, answered whole."""

    object: Literal["chat.completion"]
    choices: list[ChatChoice]
    usage: UsageBody | None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(CompletionHead):
    """One server-sent event of a streamed chat completion; the last one has
    ``usage`` and no choices (``stream_options.include_usage``)."""

    object: Literal["chat.completion.chunk"]
    choices: list[ChunkChoice]
    usage: UsageBody | None = None


class CompletionLogprobs(BaseModel):
    """A text completion's ``logprobs`` (the legacy shape): parallel lists."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None


class Completion(CompletionHead):
    """`POST /v1/completions`, answered whole or as one server-sent event."""

    object: Literal["text_completion"]
    choices: list[CompletionChoice]
    usage: UsageBody | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # base64 of little-endian float32 for encoding_format "base64"


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    """The answer of `POST /v1/embeddings`."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail
