"""Request bodies of the Ollama API subset the service speaks, validated
before a route sees them, and their translation into the OpenAI requests
that the serving layer runs.

``options`` are mapped onto our sampling (``num_predict`` → max_tokens,
``repeat_penalty`` → repetition_penalty, the rest by their own names). The
other options Ollama knows tune llama.cpp's loading or sampling methods this
engine does not have (``num_ctx``, ``num_thread``, ``num_gpu``, ``num_batch``,
``num_keep``, ``mirostat``, ``typical_p``, ``tfs_z``, ``repeat_last_n``,
``penalize_newline``, ...): they are accepted and ignored, as Ollama ignores
options it does not know.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator, model_validator

from ...config import keep_alive_seconds
from ...sampling_bounds import MAX_STOP_SEQUENCES, MinP, OllamaSeed, Penalty, RepetitionPenalty, Temperature, TopK, TopP
from ..openai.requests import (
    ChatCompletionRequest,
    ChatMessage,
    ChatTemplateOptions,
    CompletionRequest,
    FunctionCall,
    ImageUrl,
    ImageUrlPart,
    ResponseFormat,
    TextPart,
    ToolCallMessage,
)
from ..request_body import RequestBody, Strict

# num_predict: no limit (-1), or fill the context (-2): the same here.
NO_LIMIT = (-1, -2)


def refused(message: str, *, accepted: Callable[[Any], bool] = operator.not_) -> AfterValidator:
    """A field of Ollama's that asks for what this service cannot do:
    its value is refused with ``message`` unless ``accepted`` (by default:
    unless left empty or false)."""

    def refuse(value: Any) -> Any:
        if not accepted(value):
            raise ValueError(message)
        return value

    return AfterValidator(refuse)


# Base64 images (no data: prefix), read by a vision model.
Images = list[Annotated[str, Field(min_length=1)]] | None


def with_images(text: str, images: Images) -> str | list[TextPart | ImageUrlPart]:
    """A message's content with its ``images`` before its text, as OpenAI parts."""
    if not images:
        return text
    parts: list[TextPart | ImageUrlPart] = [
        ImageUrlPart(type="image_url", image_url=ImageUrl(url=f"data:application/octet-stream;base64,{image}")) for image in images
    ]
    return [*parts, TextPart(type="text", text=text)]


class Options(BaseModel):
    """Ollama's ``options``; those not listed here are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    num_predict: int | None = Field(None, description="Tokens to generate at most; -1 (or -2): no limit but the context window")
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    seed: OllamaSeed | None = Field(None, description="-1: a random seed, as when left out")
    stop: list[str] | None = Field(None, max_length=MAX_STOP_SEQUENCES)
    repeat_penalty: RepetitionPenalty | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None

    @field_validator("num_predict")
    @classmethod
    def _num_predict(cls, value: int | None) -> int | None:
        if value is not None and value < 1 and value not in NO_LIMIT:
            raise ValueError("expected a number of tokens (1 or more), or -1 for no limit")
        return value

    @property
    def unlimited(self) -> bool:
        """The client asked for no limit on the answer's length."""
        return self.num_predict in NO_LIMIT

    def openai_fields(self) -> dict[str, Any]:
        """The options that are set, as the OpenAI request fields they map onto."""
        options = {
            "max_tokens": None if self.unlimited else self.num_predict,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "seed": None if self.seed == -1 else self.seed,
            "stop": self.stop,
            "repetition_penalty": self.repeat_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        return {name: value for name, value in options.items() if value is not None}


class ModelRequest(RequestBody):
    """A request that loads the model it names (`/api/chat`, `/api/generate`,
    `/api/embed`), kept loaded for its ``keep_alive``."""

    model: str = Field(min_length=1, description="The served model's name (as /api/tags lists it), with or without ':latest'")
    options: Options = Field(default_factory=Options)
    keep_alive: float | str | None = Field(
        None, description="How long the model stays loaded after this request ('5m', seconds; negative: always; 0: unload at once)"
    )

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            keep_alive_seconds(value)
        return value

    def keep_alive_s(self, default: float | None) -> float | None:
        """How long the model stays loaded after this request, in seconds
        (None: until the service stops); ``default`` where the request sets none."""
        return default if self.keep_alive is None else keep_alive_seconds(self.keep_alive)


class OllamaGenerationRequest(ModelRequest):
    """What `/api/chat` and `/api/generate` share."""

    stream: StrictBool = True
    format: str | dict[str, Any] | None = Field(None, description="'json', or a JSON schema the answer must follow")
    think: StrictBool | Literal["low", "medium", "high"] | None = Field(
        None, description="Whether a thinking model thinks (its reasoning in message.thinking); a level sets its reasoning effort"
    )
    logprobs: Annotated[StrictBool | None, refused("log probabilities are not available here; leave logprobs out or set it to false")] = None
    top_logprobs: Annotated[int | None, refused("log probabilities are not available here; leave top_logprobs out or set it to 0")] = None

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str) and value not in ("", "json"):
            raise ValueError(f"{value!r} is not a format; expected 'json' or a JSON schema object")
        return value

    def thinking_fields(self) -> dict[str, Any]:
        """``think`` as the OpenAI request fields it maps onto."""
        if self.think is None:
            return {}
        if isinstance(self.think, bool):
            return {"chat_template_kwargs": ChatTemplateOptions(enable_thinking=self.think)}
        return {"chat_template_kwargs": ChatTemplateOptions(enable_thinking=True), "reasoning_effort": self.think}

    def response_format(self) -> ResponseFormat | None:
        """``format`` as the OpenAI response format our constraints read."""
        if isinstance(self.format, dict):
            return ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"schema": self.format}})
        return ResponseFormat(type="json_object") if self.format == "json" else None


class ToolCallFunction(Strict):
    index: int | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(Strict):
    """A call the model made in an earlier answer, in Ollama's shape (arguments as an object)."""

    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunction


class OllamaMessage(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Images = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = Field(None, description="The tool whose result a 'tool' message carries")

    def openai_message(self) -> ChatMessage:
        calls = [
            ToolCallMessage(id=call.id or f"call_{i}", function=FunctionCall(name=call.function.name, arguments=json.dumps(call.function.arguments)))
            for i, call in enumerate(self.tool_calls or [])
        ]
        return ChatMessage(role=self.role, content=with_images(self.content, self.images), name=self.tool_name, tool_calls=calls or None)


class ChatRequest(OllamaGenerationRequest):
    """`POST /api/chat`; no messages: load the model."""

    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None

    def openai_request(self, model: str) -> ChatCompletionRequest:
        """The request as a chat completion of ``model`` (the served model's name)."""
        return ChatCompletionRequest(
            model=model,
            messages=[message.openai_message() for message in self.messages],
            stream=self.stream,
            response_format=self.response_format(),
            tools=self.tools or None,
            **self.thinking_fields(),
            **self.options.openai_fields(),
        )


class GenerateRequest(OllamaGenerationRequest):
    """`POST /api/generate`: a prompt answered through the model's chat template,
    or continued as it is (``raw``); an empty prompt: load the model."""

    prompt: str = ""
    raw: StrictBool = False
    system: str | None = None
    template: Annotated[
        str | None,
        refused(
            "Ollama's Go prompt templates cannot be used here: the model's own chat template applies; "
            "leave template out, or send the whole prompt with raw: true"
        ),
    ] = None
    suffix: Annotated[str | None, refused("this model does not fill in the middle (insert); leave suffix out")] = None
    context: Annotated[list[int] | None, refused("the deprecated token context is not kept here; send the conversation to /api/chat instead")] = None
    images: Images = None

    @field_validator("system")
    @classmethod
    def _system(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("raw"):
            raise ValueError("a raw prompt is sent as it is, so a system prompt cannot be added to it; put it in the prompt, or leave raw out")
        return value

    @model_validator(mode="after")
    def _raw_has_no_format(self) -> GenerateRequest:
        if self.raw and self.format:
            raise ValueError("format: a raw prompt is continued as plain text, so its answer cannot be held to a format; leave raw out")
        if self.raw and self.images:
            raise ValueError("images: a raw prompt is continued as plain text, which has no place for images; leave raw out")
        return self

    def chat_request(self, model: str) -> ChatCompletionRequest:
        """The prompt (and ``system``) as a chat completion of ``model``."""
        messages = [ChatMessage(role="system", content=self.system)] if self.system else []
        return ChatCompletionRequest(
            model=model,
            messages=[*messages, ChatMessage(role="user", content=with_images(self.prompt, self.images))],
            stream=self.stream,
            response_format=self.response_format(),
            **self.thinking_fields(),
            **self.options.openai_fields(),
        )

    def completion_request(self, model: str) -> CompletionRequest:
        """The raw prompt as a text completion of ``model``."""
        return CompletionRequest(model=model, prompt=self.prompt, stream=self.stream, **self.options.openai_fields())


class ShowRequest(RequestBody):
    """`POST /api/show`; ``name`` is Ollama's older name for ``model``."""

    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1)
    verbose: StrictBool = False

    @model_validator(mode="after")
    def _named(self) -> ShowRequest:
        if self.model is None and self.name is None:
            raise ValueError("model: give the model's name")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.name or ""


class EmbedRequest(ModelRequest):
    """`POST /api/embed`: a text or texts (none: the model is only loaded);
    an input longer than the context is cut to fit unless ``truncate`` is
    false (as Ollama does)."""

    input: str | list[str]
    truncate: StrictBool = True
    dimensions: int | None = Field(None, ge=1)


class EmbeddingsRequest(ModelRequest):
    """`POST /api/embeddings`, Ollama's older embedding route: one text (none:
    the model is only loaded)."""

    prompt: str = ""
