"""Tool calling: OpenAI tool definitions in, calls out.

mistral.rs finds a call in the answer when the answer is JSON such as
``{"name": "get_weather", "arguments": {"city": "Paris"}}`` (or a list of
them, or a model's own tool markup) and returns it as a tool call. For
models whose chat template does not render tools (SmolLM2 has none), the
tools are described in the system message, as llama.cpp's generic tool
format does. ``tool_choice="required"`` or a named function constrains the
answer to such a call with a JSON schema, so even a small model produces a
call whose arguments validate.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from pydantic import TypeAdapter, ValidationError

from .errors import RequestError

ToolChoice = str | Mapping[str, Any]


class ToolOptions(TypedDict, total=False):
    """A request's tools, as `Session.stream` takes them (``**options``):
    OpenAI tool definitions, and "auto", "none", "required" or
    ``{"type": "function", "function": {"name": ...}}``."""

    tools: Sequence[Mapping[str, Any]]
    tool_choice: ToolChoice


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def check_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate OpenAI-shaped tool definitions; errors name the tool and field."""
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence) or not tools:
        raise RequestError("tools: expected a non-empty list of {'type': 'function', 'function': {...}}")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function" or not isinstance(function, Mapping):
            raise RequestError(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RequestError(f"tools[{i}].function.name: {name!r} is not valid; expected 1-64 letters, digits, _ or -")
        if name in seen:
            raise RequestError(f"tools[{i}].function.name: '{name}' is given twice")
        seen.add(name)
        parameters = function.get("parameters", _NO_PARAMETERS)
        if not isinstance(parameters, Mapping):
            raise RequestError(f"tools[{i}].function.parameters: expected a JSON schema object")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise RequestError(f"tools[{i}].function.description: expected a string")
        entry: dict[str, Any] = {"name": name, "parameters": dict(parameters)}
        if description:
            entry["description"] = description
        checked.append({"type": "function", "function": entry})
    return checked


def chosen_tools(tools: list[dict[str, Any]], tool_choice: ToolChoice) -> tuple[list[dict[str, Any]], bool]:
    """The tools the answer may call and whether it must call one, for an
    OpenAI ``tool_choice``: "auto", "none", "required" or a named function."""
    if tool_choice == "auto":
        return tools, False
    if tool_choice == "none":
        return [], False
    if tool_choice == "required":
        return tools, True
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name") if isinstance(tool_choice.get("function"), Mapping) else None
        for tool in tools:
            if tool["function"]["name"] == name:
                return [tool], True
        known = ", ".join(t["function"]["name"] for t in tools)
        raise RequestError(f"tool_choice.function.name: {name!r} is not one of the tools ({known})")
    raise RequestError(f"tool_choice: {tool_choice!r} is not 'auto', 'none', 'required' or {{'type': 'function', 'function': {{'name': ...}}}}")


def _closed(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters that admit no arguments beyond those listed (as OpenAI's
    strict mode), unless the schema says otherwise: small models otherwise
    keep inventing arguments until the token limit."""
    if parameters.get("type") == "object" and "additionalProperties" not in parameters:
        return {**parameters, "additionalProperties": False}
    return parameters


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of one call of any of ``tools``: ``{"name": ..., "arguments": {...}}``."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"enum": [tool["function"]["name"]]}, "arguments": _closed(tool["function"]["parameters"])},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def tool_instructions(tools: list[dict[str, Any]]) -> str:
    """The system-message text that tells a model without tool markup about the tools."""
    listing = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in tools)
    return (
        "You can call these tools:\n"
        f"{listing}\n"
        'To call a tool, answer with only a JSON object: {"name": <tool name>, "arguments": {<arguments>}}. '
        "Otherwise answer normally."
    )


def template_renders_tools(chat_template: str | None) -> bool:
    """Whether a chat template shows the request's tools to the model."""
    return chat_template is not None and "tools" in chat_template


def tool_call_body(call: Any) -> dict[str, Any]:
    """A `ToolCall` in OpenAI's message shape."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def calls_as_text(calls: Sequence[Mapping[str, Any]]) -> str:
    """Assistant tool calls as the JSON text the model would have written."""
    written = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments", "{}")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            parsed = arguments
        written.append({"name": function.get("name"), "arguments": parsed})
    return json.dumps(written[0] if len(written) == 1 else written, ensure_ascii=False)


def messages_for_engine(messages: Sequence[Any]) -> list[Any]:
    """OpenAI messages → what the engine reads (role and content text): an
    assistant's ``tool_calls`` become the JSON it called them with; tool
    results stay ``tool`` messages; anything else passes as it is."""
    converted = []
    for message in messages:
        calls = message.get("tool_calls") if isinstance(message, Mapping) else None
        if calls and message.get("role") == "assistant":
            content = message.get("content")
            text = f"{content}\n{calls_as_text(calls)}" if content else calls_as_text(calls)
            message = {"role": "assistant", "content": text}
        converted.append(message)
    return converted


def with_tool_instructions(messages: list[dict[str, str]], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """``messages`` with the tools described in the (first) system message."""
    text = tool_instructions(tools)
    if messages and messages[0].get("role") == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


@dataclass(frozen=True)
class ToolRequest:
    """What the engine gets for a request with tools: the messages, the
    offered tools as JSON text (None: no tool offered), and the schema a
    required call must follow."""

    messages: list[dict[str, str]]
    tools_json: str | None = None
    call_schema: dict[str, Any] | None = None


def prepare(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    tool_choice: ToolChoice,
    *,
    chat_template: str | None,
    constrained: bool,
) -> ToolRequest:
    """Messages and engine options for a request with ``tools``. ``constrained``
    says the caller already set a json_schema/regex/grammar."""
    offered, required = chosen_tools(check_tools(tools), tool_choice)
    converted = messages_for_engine(messages)
    if not offered:
        return ToolRequest(converted)
    if required and constrained:
        raise RequestError("tool_choice: a required tool call cannot be combined with response_format / regex / grammar")
    if not template_renders_tools(chat_template):
        converted = with_tool_instructions(converted, offered)
    return ToolRequest(converted, json.dumps(offered), call_schema(offered) if required else None)


# ---- Python functions as tools ----------------------------------------------------


@dataclass(frozen=True)
class PythonTool:
    """A Python function offered to the model as a tool: its name, the first
    paragraph of its docstring, and a JSON schema of its parameters."""

    function: Callable[..., Any]

    @property
    def name(self) -> str:
        return self.function.__name__

    def definition(self) -> dict[str, Any]:
        """The OpenAI tool definition."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for parameter in inspect.signature(self.function).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            annotation = parameter.annotation if parameter.annotation is not parameter.empty else str
            properties[parameter.name] = TypeAdapter(annotation).json_schema()
            if parameter.default is parameter.empty:
                required.append(parameter.name)
        description = (inspect.getdoc(self.function) or "").split("\n\n")[0].replace("\n", " ")
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required},
            },
        }

    def call(self, arguments: str) -> str:
        """Run the function with the model's JSON arguments; the result (or the
        error, which the model should see too) as text."""
        try:
            values = json.loads(arguments or "{}")
            if not isinstance(values, dict):
                raise TypeError("arguments are not a JSON object")
            signature = inspect.signature(self.function)
            bound = signature.bind(**values)
            for name, value in bound.arguments.items():
                annotation = signature.parameters[name].annotation
                if annotation is not inspect.Parameter.empty:
                    bound.arguments[name] = TypeAdapter(annotation).validate_python(value)
            result = self.function(*bound.args, **bound.kwargs)
        except (json.JSONDecodeError, TypeError, ValidationError) as e:
            return f"error: {self.name} cannot take {arguments}: {e}"
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)


def load_python_tool(spec: str) -> PythonTool:
    """``module:function`` or ``path/to/file.py:function`` → a `PythonTool`."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise RequestError(f"--tool {spec}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser()
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None or not path.is_file():
                raise FileNotFoundError(f"no such file {path}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except Exception as e:  # an import runs the user's code: any error is theirs to see
        raise RequestError(f"--tool {spec}: cannot load {where} ({type(e).__name__}: {e})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise RequestError(f"--tool {spec}: {where} has no function {name}")
    return PythonTool(function)
