"""Request bodies of Anthropic's Messages API (`POST /v1/messages` and
`/v1/messages/count_tokens`), validated before a route sees them, and their
translation into the OpenAI chat request that the serving layer runs.

Image blocks in a user message become OpenAI image_url parts (a vision
model reads them; the serving layer refuses them for a text model);
document blocks are refused by name. Tools map onto OpenAI's: ``input_schema`` is a function's ``parameters``,
a ``tool_use`` block an assistant's tool call, a ``tool_result`` block a
``tool`` message.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from ...sampling_bounds import AnthropicTemperature, MaxTokens, TopK, TopP
from ..openai.requests import (
    ChatCompletionRequest,
    ChatMessage,
    ChatTemplateOptions,
    FunctionCall,
    ImageUrl,
    ImageUrlPart,
    TextPart,
    ToolCallMessage,
)
from ..request_body import RequestBody, Strict


class CacheControl(Strict):
    """Accepted and left to the engine's prefix cache, which reuses any prompt start."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


def _blocks(value: Any, refused: tuple[str, ...], where: str) -> Any:
    """A string as one text block (content and ``system`` may be either);
    blocks of the ``refused`` types refused with what to send instead."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list):
        raise PydanticCustomError("content_type", "expected a string or a list of content blocks")
    for i, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in refused:
            raise PydanticCustomError(
                "media_block",
                "block {index}: {kind} blocks are not supported {where} (send text{more} blocks)",
                {"index": i, "kind": kind, "where": where, "more": ", image, tool_use and tool_result" if kind == "document" else ""},
            )
    return value


def text_blocks(value: Any) -> Any:
    """Text only (``system``, a tool result's content)."""
    return _blocks(value, ("image", "document"), "here")


def message_blocks(value: Any) -> Any:
    """A message's blocks: documents refused (images go to a vision model)."""
    return _blocks(value, ("document",), "by this service")


class TextBlock(Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: None = None  # as a returned text block carries it back


# Text given as a string or as text blocks (``system``, a tool result's content).
TextBlocks = Annotated[list[TextBlock], BeforeValidator(text_blocks, json_schema_input_type=str | list[TextBlock])]


class ToolUseBlock(Strict):
    """A tool call the assistant made."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(Strict):
    """What a tool call (``tool_use_id``) gave back."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: TextBlocks = Field(default_factory=list)
    is_error: bool | None = None
    cache_control: CacheControl | None = None

    def text(self) -> str:
        """The result as the model reads it; an error says so."""
        text = "\n".join(block.text for block in self.content)
        return f"error: {text}" if self.is_error else text


class Base64ImageSource(Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class UrlImageSource(Strict):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(Strict):
    """An image in a user message: base64 in the request, or at a URL
    (fetched where server.images allows it)."""

    type: Literal["image"]
    source: Annotated[Base64ImageSource | UrlImageSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None

    def openai(self) -> ImageUrlPart:
        source = self.source
        url = f"data:{source.media_type};base64,{source.data}" if isinstance(source, Base64ImageSource) else source.url
        return ImageUrlPart(type="image_url", image_url=ImageUrl(url=url))


ContentBlock = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class InputMessage(Strict):
    role: Literal["user", "assistant"]
    content: Annotated[list[ContentBlock], BeforeValidator(message_blocks, json_schema_input_type=str | list[ContentBlock]), Field(min_length=1)]

    @model_validator(mode="after")
    def _blocks_of_their_role(self) -> InputMessage:
        wrong = ToolUseBlock if self.role == "user" else (ToolResultBlock, ImageBlock)
        for i, block in enumerate(self.content):
            if isinstance(block, wrong):
                owner = "assistant" if self.role == "user" else "user"
                raise PydanticCustomError(
                    "block_role", "block {index}: {kind} blocks belong in {owner} messages", {"index": i, "kind": block.type, "owner": owner}
                )
        return self

    def chat_messages(self) -> list[ChatMessage]:
        """This message as OpenAI chat messages: an assistant's text and tool
        calls in one; a user's tool results as ``tool`` messages before its text."""
        text = "\n".join(block.text for block in self.content if isinstance(block, TextBlock))
        if self.role == "assistant":
            calls = [
                ToolCallMessage(id=block.id, function=FunctionCall(name=block.name, arguments=json.dumps(block.input, ensure_ascii=False)))
                for block in self.content
                if isinstance(block, ToolUseBlock)
            ]
            return [ChatMessage(role="assistant", content=text or None, tool_calls=calls or None)]
        results = [
            ChatMessage(role="tool", tool_call_id=block.tool_use_id, content=block.text())
            for block in self.content
            if isinstance(block, ToolResultBlock)
        ]
        has_text = any(isinstance(block, TextBlock | ImageBlock) for block in self.content)
        if any(isinstance(block, ImageBlock) for block in self.content):
            parts: list[TextPart | ImageUrlPart] = []
            for block in self.content:
                if isinstance(block, ImageBlock):
                    parts.append(block.openai())
                elif isinstance(block, TextBlock):
                    parts.append(TextPart(type="text", text=block.text))
            return [*results, ChatMessage(role="user", content=parts)]
        return [*results, ChatMessage(role="user", content=text)] if has_text or not results else results


class Tool(Strict):
    """A tool the model may call (Anthropic's server tools are not offered)."""

    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None

    def openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.input_schema}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class ToolChoiceAuto(Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Strict):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Strict):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Strict):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class Thinking(Strict):
    """Extended thinking: a thinking model thinks (enabled, adaptive) or not
    (disabled); asked of a model that does not think, it is refused (as
    Anthropic refuses it). The thinking is not cut at ``budget_tokens``:
    ``max_tokens`` bounds thinking and answer together."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1)

    @property
    def enabled(self) -> bool:
        return self.type != "disabled"


class Metadata(Strict):
    user_id: str | None = Field(None, max_length=256)


class CountTokensRequest(RequestBody):
    """`POST /v1/messages/count_tokens`: the prompt part of a request."""

    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: TextBlocks | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    cache_control: CacheControl | None = None
    thinking: Thinking | None = None

    @model_validator(mode="after")
    def _prompt_is_answerable(self) -> CountTokensRequest:
        if self.messages[-1].role != "user":
            raise PydanticCustomError(
                "last_message",
                "messages: the last message must be a user message; continuing an assistant message (prefill) is not supported",
            )
        names = [tool.name for tool in self.tools or []]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise PydanticCustomError("tool_name", "tools.{index}.name: '{name}' is given twice", {"index": i, "name": name})
        if isinstance(self.tool_choice, ToolChoiceAny) and not names:
            raise PydanticCustomError("tool_choice", "tool_choice: 'any' needs tools")
        if isinstance(self.tool_choice, ToolChoiceTool) and self.tool_choice.name not in names:
            raise PydanticCustomError(
                "tool_choice",
                "tool_choice.name: '{name}' is not one of the tools ({known})",
                {"name": self.tool_choice.name, "known": ", ".join(names) or "none given"},
            )
        return self

    def openai_tool_choice(self) -> str | dict[str, Any] | None:
        choice = self.tool_choice
        if isinstance(choice, ToolChoiceTool):
            return {"type": "function", "function": {"name": choice.name}}
        if isinstance(choice, ToolChoiceAny):
            return "required"
        return None if choice is None else choice.type

    def chat_fields(self) -> dict[str, Any]:
        """The fields of the OpenAI chat request for this one."""
        system = [ChatMessage(role="system", content="\n".join(block.text for block in self.system))] if self.system else []
        messages = [*system, *(chat for message in self.messages for chat in message.chat_messages())]
        tools = [tool.openai() for tool in self.tools] if self.tools else None
        fields: dict[str, Any] = {"model": self.model, "messages": messages, "tools": tools, "tool_choice": self.openai_tool_choice()}
        if self.thinking is not None:
            fields["chat_template_kwargs"] = ChatTemplateOptions(enable_thinking=self.thinking.enabled)
        return fields

    def chat_request(self) -> ChatCompletionRequest:
        """The OpenAI chat request the serving layer runs for this one."""
        # Built, not validated again: every value was checked here, and
        # OpenAI's own limits (at most 4 stop strings) are not Anthropic's.
        return ChatCompletionRequest.model_construct(**self.chat_fields())


class MessagesRequest(CountTokensRequest):
    """`POST /v1/messages`."""

    max_tokens: MaxTokens
    stop_sequences: list[str] | None = None
    stream: StrictBool = False
    temperature: AnthropicTemperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    metadata: Metadata | None = None

    def chat_fields(self) -> dict[str, Any]:
        """With the sampling fields; ``metadata.user_id`` is the request's
        ``user``, which names its stored conversation (as OpenAI's does)."""
        return {
            **super().chat_fields(),
            "max_tokens": self.max_tokens,
            "stop": self.stop_sequences,
            "stream": self.stream,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "user": self.metadata.user_id if self.metadata else None,
        }
