"""Request bodies of OpenAI's chat and text completions, validated before a
route sees them; the other APIs translate their requests into these, which
the serving layer runs."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from ...sampling import SamplingParams
from ...sampling_bounds import (
    MAX_LOGIT_BIAS,
    MAX_STOP_SEQUENCES,
    MaxTokens,
    MinP,
    Penalty,
    RepetitionPenalty,
    Seed,
    Temperature,
    TopK,
    TopLogprobs,
    TopP,
)
from ...tools import ToolOptions
from ..request_body import RequestBody, Strict

# The most answers one request may ask for (n); also bounded by the engine's
# running sequences (`server.serving.answer_sampling`).
MAX_CHOICES = 128


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageUrl(Strict):
    url: str = Field(min_length=1, description="a data: URL, or a file: or http(s) URL where server.images allows it")
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class FunctionCall(Strict):
    name: str
    arguments: str


class ToolCallMessage(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[Annotated[TextPart | ImageUrlPart, Field(discriminator="type")]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallMessage] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and self.role in ("system", "user"):
            raise ValueError(f"content is required in a {self.role} message")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if isinstance(part, TextPart))
        return self.content or ""

    def session_content(self) -> str | list[dict[str, Any]]:
        """The content as `Session` takes it: the text, or the parts where the
        message holds images (image_url parts, read by `images.aresolve_images`)."""
        if isinstance(self.content, list) and any(isinstance(part, ImageUrlPart) for part in self.content):
            return [part.model_dump(exclude_none=True) for part in self.content]
        return self.text()


class StreamOptions(Strict):
    include_usage: StrictBool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


def format_schema(kind: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema an answer in the format ``kind`` must follow: any
    object (``json_object``), ``schema`` (``json_schema``), or none (``text``)."""
    return {"type": "object"} if kind == "json_object" else schema if kind == "json_schema" else None


class ResponseFormat(Strict):
    """OpenAI's ``response_format``, and llama-server's form of a schema,
    ``{"type": "json_object", "schema": {...}}``, which structured-output
    libraries send too."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        if self.schema_ is not None and self.type != "json_object":
            raise ValueError(f"schema goes with type 'json_object' (llama-server's form), not {self.type!r}; for json_schema give json_schema.schema")
        return self

    def answer_schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must follow, if any."""
        if self.schema_ is not None:
            return self.schema_
        return format_schema(self.type, self.json_schema.schema_ if self.json_schema else None)


class SamplingRequest(RequestBody):
    """Fields shared by chat and text completions."""

    prompt_param: ClassVar[str] = "messages"
    answer_tokens_param: ClassVar[str] = "max_tokens"
    model: str
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    repetition_penalty: RepetitionPenalty | None = None
    # Answers to write from the prompt, decoded together (continuous batching).
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    user: str | None = Field(None, max_length=256)
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None  # accepted and ignored: one tier here

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"key {token!r} is not a token id (a whole number in a string)")
            if not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
                raise ValueError(f"{bias} for token {token} is out of range; expected -{MAX_LOGIT_BIAS} to {MAX_LOGIT_BIAS}")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        if isinstance(value, str):
            value = [value]
        if value is not None and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return value

    # vLLM's extensions for constrained decoding (the OpenAI API has no
    # regex or grammar); at most one constraint per request.
    guided_regex: str | None = None
    guided_grammar: str | None = None

    def answer_tokens(self) -> int | None:
        return self.max_tokens

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingRequest:
        if self.guided_regex is not None and self.guided_grammar is not None:
            raise ValueError("give at most one of guided_regex and guided_grammar")
        return self

    def sampling_fields(self) -> dict[str, Any]:
        """The `SamplingParams` fields this request sets."""
        fields: dict[str, Any] = {
            "max_tokens": self.answer_tokens(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "seed": self.seed,
            "stop": self.stop,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "repetition_penalty": self.repetition_penalty,
            "regex": self.guided_regex,
            "grammar": self.guided_grammar,
            "logit_bias": {int(token): bias for token, bias in self.logit_bias.items()} if self.logit_bias else None,
        }
        return {name: value for name, value in fields.items() if value is not None}

    def sampling(self) -> SamplingParams:
        """How the engine writes this request's answers."""
        return SamplingParams(**self.sampling_fields())

    def tool_options(self) -> ToolOptions:
        """The request's tools, for `Session`."""
        return {}


class ChatTemplateOptions(BaseModel):
    """vLLM's ``chat_template_kwargs``: of them, a thinking model's ``enable_thinking`` is read."""

    model_config = ConfigDict(extra="allow")
    enable_thinking: StrictBool | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    # A thinking model: OpenAI's reasoning_effort, vLLM's chat_template_kwargs.enable_thinking.
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    chat_template_kwargs: ChatTemplateOptions | None = None
    logprobs: StrictBool | None = None
    top_logprobs: TopLogprobs | None = None
    max_completion_tokens: MaxTokens | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _schema_or_guided(self) -> ChatCompletionRequest:
        guided = self.guided_regex is not None or self.guided_grammar is not None
        if self.response_format is not None and self.response_format.type != "text" and guided:
            raise ValueError("response_format with a schema cannot be combined with guided_regex or guided_grammar")
        return self

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def sampling_fields(self) -> dict[str, Any]:
        fields = super().sampling_fields()
        if self.logprobs:
            fields.update(logprobs=True, top_logprobs=self.top_logprobs or 0)
        if self.response_format is not None and (schema := self.response_format.answer_schema()) is not None:
            fields["json_schema"] = schema
        if self.chat_template_kwargs is not None and self.chat_template_kwargs.enable_thinking is not None:
            fields["think"] = self.chat_template_kwargs.enable_thinking
        if self.reasoning_effort is not None:
            fields["reasoning_effort"] = self.reasoning_effort
        return fields

    def session_messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for m in self.messages:
            message: dict[str, Any] = {"role": m.role, "content": m.session_content()}
            if m.tool_calls:
                message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
            messages.append(message)
        return messages

    def tool_options(self) -> ToolOptions:
        if not self.tools:
            return {}
        return {"tools": self.tools, "tool_choice": self.tool_choice or "auto"}


class CompletionRequest(SamplingRequest):
    """`POST /v1/completions`: continue raw text, no chat template."""

    prompt: str = Field(min_length=1)
    logprobs: TopLogprobs | None = None
    echo: Literal[False] = False
    best_of: int | None = None

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("best_of is not supported: every answer the engine writes is returned; ask for several with n")
        return value

    suffix: None = None

    def sampling_fields(self) -> dict[str, Any]:
        fields = super().sampling_fields()
        if self.logprobs is not None:
            fields.update(logprobs=True, top_logprobs=self.logprobs)
        return fields


TokenId = Annotated[int, Field(ge=0)]


class EmbeddingRequest(RequestBody):
    """`POST /v1/embeddings`: a text, texts, token ids or lists of them."""

    model: str
    input: str | list[str] | list[list[TokenId]] | list[TokenId]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)

    def inputs(self) -> str | list[str] | list[list[int]]:
        """The inputs as `Session.embed` takes them (a flat list of token
        ids is one input)."""
        if isinstance(self.input, list) and self.input and isinstance(self.input[0], int):
            return [self.input]
        return cast(str | list[str] | list[list[int]], self.input)
