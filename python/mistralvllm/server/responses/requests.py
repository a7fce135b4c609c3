"""Request bodies of OpenAI's Responses API (`POST /v1/responses`), the subset
the service runs: text input, function tools and structured output.

A request is validated here and turned into what the serving layer takes:
chat messages (`ResponseRequest.input_messages`), `SamplingParams`
(`ResponseRequest.sampling`) and tools (`ResponseRequest.tool_options`).
Items the client copies back from an earlier response's ``output`` (with
their ``id``, ``status``, ``annotations``) are accepted as input.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictBool, Tag, ValidationInfo, field_validator, model_validator

from ...sampling import SamplingParams
from ...sampling_bounds import MaxTokens, Temperature, TopP
from ...tools import ToolOptions
from ..openai.requests import format_schema
from ..request_body import RequestBody, Strict

# OpenAI's limits on metadata: 16 pairs, keys up to 64 characters, values up to 512.
METADATA_PAIRS, METADATA_KEY_LENGTH, METADATA_VALUE_LENGTH = 16, 64, 512
_FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


def _by_type(default: str, error_type: str, message: str) -> Discriminator:
    """Picks an item's or part's model by its ``type`` (``default`` when it
    has none); one that fits none is refused as ``error_type`` with ``message``."""

    def kind(value: Any) -> str:
        found = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)
        return found if isinstance(found, str) else ""

    return Discriminator(kind, custom_error_type=error_type, custom_error_message=message)


class InputTextPart(Strict):
    type: Literal["input_text"]
    text: str


class OutputTextPart(Strict):
    """An earlier answer's text, as the client copies it back."""

    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputImagePart(Strict):
    """An image: a data: URL, or a file: or http(s) URL where server.images allows it."""

    type: Literal["input_image"]
    image_url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None
    file_id: Annotated[None, Field(description="uploaded files are not kept here; send image_url")] = None


MessagePart = Annotated[
    Annotated[InputTextPart, Tag("input_text")] | Annotated[OutputTextPart, Tag("output_text")] | Annotated[InputImagePart, Tag("input_image")],
    _by_type("", "unsupported_content", "expected an input_text, input_image or output_text part; files and audio are not read here"),
]


def _as_parts(content: Any) -> Any:
    """Text content as one text part (so errors name a part, not a union member)."""
    return [{"type": "input_text", "text": content}] if isinstance(content, str) else content


class MessageItem(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Annotated[list[MessagePart], BeforeValidator(_as_parts, json_schema_input_type=str | list[MessagePart])]
    id: str | None = None
    status: str | None = None
    phase: str | None = None

    def text(self) -> str:
        return "".join(part.text for part in self.content if not isinstance(part, InputImagePart))

    def session_content(self) -> str | list[dict[str, Any]]:
        """The content as `Session` takes it: the text, or OpenAI's parts where it holds images."""
        if not any(isinstance(part, InputImagePart) for part in self.content):
            return self.text()
        return [
            {"type": "image_url", "image_url": {"url": part.image_url}} if isinstance(part, InputImagePart) else {"type": "text", "text": part.text}
            for part in self.content
        ]


class FunctionCallItem(Strict):
    """A call the model made (from an earlier response's ``output``)."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Strict):
    """What the client's function returned for ``call_id``."""

    type: Literal["function_call_output"]
    call_id: str
    output: Annotated[list[InputTextPart], BeforeValidator(_as_parts, json_schema_input_type=str | list[InputTextPart])]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return "".join(part.text for part in self.output)


class ReasoningItem(BaseModel):
    """A reasoning item of an earlier response's output, sent back: taken and
    left out of the prompt (a chat template does not read past reasoning back)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["reasoning"]


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    _by_type("message", "unsupported_item", "expected a message, function_call, function_call_output or reasoning item"),
]


class ReasoningConfig(Strict):
    """``reasoning``: a thinking model's effort (``minimal`` is its lowest,
    ``low``); a summary is not written (the reasoning comes whole)."""

    effort: Literal["minimal", "low", "medium", "high"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


def _as_user_message(value: Any) -> Any:
    """A string input is the user's message."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


class FunctionTool(Strict):
    """A function the model may call, in the Responses API's flat shape."""

    type: Literal["function"]
    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _functions_only(cls, value: Any) -> Any:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind is not None and kind != "function":
            raise ValueError(f"tools of type {kind!r} are not supported; this service runs function tools only ({{'type': 'function', 'name': ...}})")
        return value

    def chat_tool(self) -> dict[str, Any]:
        """The tool in chat completions' shape, as `Session` takes it."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        if self.parameters is not None:
            function["parameters"] = self.parameters
        return {"type": "function", "function": function}


class FunctionChoice(Strict):
    type: Literal["function"]
    name: str


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaTextFormat(Strict):
    type: Literal["json_schema"]
    name: str = Field(pattern=_FUNCTION_NAME)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(Strict):
    format: TextFormat | JsonObjectFormat | JsonSchemaTextFormat = Field(TextFormat(type="text"), discriminator="type")

    def answer_schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must follow, if any."""
        return format_schema(self.format.type, self.format.schema_ if isinstance(self.format, JsonSchemaTextFormat) else None)


class ResponseRequest(RequestBody):
    """`POST /v1/responses`."""

    prompt_param: ClassVar[str] = "input"
    answer_tokens_param: ClassVar[str] = "max_output_tokens"

    model: str
    input: Annotated[list[InputItem], BeforeValidator(_as_user_message, json_schema_input_type=str | list[InputItem])]
    instructions: str | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    text: TextConfig | None = None
    store: StrictBool = True
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    stream: StrictBool = False
    reasoning: ReasoningConfig | None = None

    @field_validator("input")
    @classmethod
    def _some_input(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("expected a string or at least one input item")
        return value

    @field_validator("tools")
    @classmethod
    def _names_once(cls, value: list[FunctionTool] | None) -> list[FunctionTool] | None:
        names = [tool.name for tool in value or []]
        if len(set(names)) < len(names):
            raise ValueError("each function name may be given once")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, value: Any, info: ValidationInfo) -> Any:
        names = [tool.name for tool in info.data.get("tools") or []]
        if isinstance(value, FunctionChoice) and value.name not in names:
            raise ValueError(f"{value.name!r} is not one of the tools ({', '.join(names) or 'none given'})")
        if value == "required" and not names:
            raise ValueError("'required' needs tools")
        return value

    @field_validator("text")
    @classmethod
    def _format_or_required_call(cls, value: TextConfig | None, info: ValidationInfo) -> TextConfig | None:
        choice = info.data.get("tool_choice")
        if value is not None and value.answer_schema() is not None and (choice == "required" or isinstance(choice, FunctionChoice)):
            raise ValueError("a json_object or json_schema format cannot be combined with a required tool call (tool_choice)")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > METADATA_PAIRS:
            raise ValueError(f"at most {METADATA_PAIRS} pairs")
        for key, text in value.items():
            if len(key) > METADATA_KEY_LENGTH or len(text) > METADATA_VALUE_LENGTH:
                raise ValueError(f"{key[:80]!r}: keys are at most {METADATA_KEY_LENGTH} characters, values at most {METADATA_VALUE_LENGTH}")
        return value

    def answer_tokens(self) -> int | None:
        return self.max_output_tokens

    def sampling(self) -> SamplingParams:
        """How the engine writes this request's answer."""
        fields: dict[str, Any] = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}
        if self.text is not None:
            fields["json_schema"] = self.text.answer_schema()
        if self.reasoning is not None and self.reasoning.effort is not None:
            fields["reasoning_effort"] = "low" if self.reasoning.effort == "minimal" else self.reasoning.effort
        return SamplingParams(**{key: value for key, value in fields.items() if value is not None})

    def tool_options(self) -> ToolOptions:
        """The request's tools, for `Session`."""
        if not self.tools:
            return {}
        choice = self.tool_choice or "auto"
        return {
            "tools": [tool.chat_tool() for tool in self.tools],
            "tool_choice": choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice.name}},
        }

    def input_messages(self) -> list[dict[str, Any]]:
        """The input as chat messages: a developer message is a system one,
        consecutive function calls are one assistant message's ``tool_calls``,
        and a function's output is a ``tool`` message."""
        messages: list[dict[str, Any]] = []
        for item in self.input:
            if isinstance(item, MessageItem):
                messages.append({"role": "system" if item.role == "developer" else item.role, "content": item.session_content()})
            elif isinstance(item, FunctionCallOutputItem):
                messages.append({"role": "tool", "content": item.text()})
            elif isinstance(item, ReasoningItem):
                continue
            else:
                call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
                if messages and "tool_calls" in messages[-1]:
                    messages[-1]["tool_calls"].append(call)
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        return messages
