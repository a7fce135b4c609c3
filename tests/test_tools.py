"""Tool calling: OpenAI tool definitions in, calls out, through Session, the
service and the command; the default model (SmolLM2-135M, no tool format of
its own) calls tools through a schema-constrained answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema_rs
import openai
import pytest

from mistralvllm import RequestError, SamplingParams, Session
from mistralvllm.tools import PythonTool, call_schema, check_tools, load_python_tool, messages_for_engine, prepare
from prompts import WEATHER
from service import API_KEY, AUTH, MODEL

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_TOOLS = REPO / "examples" / "tools.py"
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
    },
}
TOOLS = [WEATHER, ADD]
QUESTIONS = ["What is the weather in Paris?", "What is 2 plus 3?", "Is it raining in London?", "Add 10 and 32.", "Tell me a joke."]


def _validates(tool: dict, arguments: str) -> bool:
    return jsonschema_rs.validator_for(tool["function"]["parameters"]).is_valid(json.loads(arguments))


# ---- the policy, without the engine -----------------------------------------------


@pytest.mark.parametrize(
    "tools,fragment",
    [
        ([], "non-empty list"),
        ("get_weather", "non-empty list"),
        ([{"type": "function"}], "tools[0]: expected"),
        ([{"type": "retrieval", "function": {"name": "x"}}], "tools[0]: expected"),
        ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name"),
        ([WEATHER, WEATHER], "tools[1].function.name: 'get_weather' is given twice"),
        ([{"type": "function", "function": {"name": "f", "parameters": []}}], "tools[0].function.parameters"),
    ],
)
def test_bad_tool_definitions_name_the_field(tools: object, fragment: str) -> None:
    with pytest.raises(RequestError) as error:
        check_tools(tools)  # type: ignore[arg-type]
    assert fragment in str(error.value)


def test_tool_choice_forms() -> None:
    messages = [{"role": "user", "content": "hi"}]
    auto = prepare(messages, TOOLS, "auto", chat_template=None, constrained=False)
    assert auto.call_schema is None and json.loads(auto.tools_json)[1]["function"]["name"] == "add"
    # A template without tools gets them described in a system message.
    assert auto.messages[0]["role"] == "system" and "get_weather" in auto.messages[0]["content"]
    rendered = prepare(messages, TOOLS, "auto", chat_template="{% for tool in tools %}{% endfor %}", constrained=False)
    assert rendered.messages == messages
    named = prepare(messages, TOOLS, {"type": "function", "function": {"name": "add"}}, chat_template=None, constrained=False)
    assert named.call_schema == call_schema([ADD])
    none = prepare(messages, TOOLS, "none", chat_template=None, constrained=False)
    assert none.tools_json is None and none.call_schema is None
    with pytest.raises(RequestError, match="'nope' is not one of the tools"):
        prepare(messages, TOOLS, {"type": "function", "function": {"name": "nope"}}, chat_template=None, constrained=False)
    with pytest.raises(RequestError, match="cannot be combined"):
        prepare(messages, TOOLS, "required", chat_template=None, constrained=True)


def test_call_schema_accepts_calls_and_only_calls() -> None:
    validator = jsonschema_rs.validator_for(call_schema(TOOLS))
    assert validator.is_valid({"name": "add", "arguments": {"a": 1, "b": 2}})
    assert not validator.is_valid({"name": "add", "arguments": {"a": 1}})
    assert not validator.is_valid({"name": "add", "arguments": {"a": 1, "b": 2, "c": 3}})
    assert not validator.is_valid({"name": "sub", "arguments": {"a": 1, "b": 2}})


def test_assistant_tool_calls_become_text_for_the_engine() -> None:
    call = {"id": "call-1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    converted = messages_for_engine([{"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "content": "3"}])
    assert converted == [{"role": "assistant", "content": '{"name": "add", "arguments": {"a": 1, "b": 2}}'}, {"role": "tool", "content": "3"}]


def test_python_function_as_tool() -> None:
    weather = load_python_tool(f"{EXAMPLE_TOOLS}:get_weather")
    assert weather.definition()["function"] == WEATHER["function"] | {
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }
    assert weather.call('{"city": "Paris"}') == "sunny, 21 C"
    add = PythonTool(load_python_tool(f"{EXAMPLE_TOOLS}:add").function)
    assert add.call('{"a": 2, "b": 3}') == "5.0"
    assert add.call('{"a": "two", "b": 3}').startswith("error: add cannot take")
    assert add.call('{"a": 2}').startswith("error: add cannot take")
    for spec, fragment in [
        ("nocolon", "expected MODULE:FUNCTION"),
        ("/no/such.py:f", "cannot load"),
        (f"{EXAMPLE_TOOLS}:missing", "has no function missing"),
    ]:
        with pytest.raises(RequestError, match=fragment):
            load_python_tool(spec)


# ---- the engine -------------------------------------------------------------------


@pytest.mark.parametrize("question", QUESTIONS)
def test_required_tool_call_is_valid_every_time(session: Session, question: str) -> None:
    result = session.chat([{"role": "user", "content": question}], SamplingParams(max_tokens=64), tools=TOOLS, tool_choice="required")
    assert result.finish_reason == "tool_calls" and result.text == ""
    (call,) = result.tool_calls
    tool = next(t for t in TOOLS if t["function"]["name"] == call.name)
    assert _validates(tool, call.arguments), call
    assert call.id.startswith("call-")


def test_named_tool_choice_forces_that_tool(session: Session) -> None:
    result = session.chat(
        [{"role": "user", "content": "What is the weather in Paris?"}],
        SamplingParams(max_tokens=64),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
    )
    assert [call.name for call in result.tool_calls] == ["add"]
    assert _validates(ADD, result.tool_calls[0].arguments)


def test_tool_call_streams_as_the_last_chunk(session: Session) -> None:
    chunks = list(
        session.stream([{"role": "user", "content": "Weather in Tokyo?"}], SamplingParams(max_tokens=64), tools=[WEATHER], tool_choice="required")
    )
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage is not None
    assert [call.name for call in chunks[-1].tool_calls] == ["get_weather"]
    assert all(not c.tool_calls for c in chunks[:-1])


def test_tool_choice_none_and_no_tools_answer_in_text(session: Session) -> None:
    question = [{"role": "user", "content": "What is the capital of France?"}]
    plain = session.chat(question, SamplingParams(max_tokens=16))
    none = session.chat(question, SamplingParams(max_tokens=16), tools=TOOLS, tool_choice="none")
    assert none.tool_calls == () and none.text == plain.text
    with pytest.raises(RequestError, match="tool_choice: needs tools"):
        session.chat(question, SamplingParams(max_tokens=4), tool_choice="required")


def test_tool_result_goes_back_for_the_answer(session: Session) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = session.chat(messages, SamplingParams(max_tokens=64), tools=[WEATHER], tool_choice="required")
    (call,) = first.tool_calls
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}],
        },
        {"role": "tool", "content": "sunny, 21 C"},
    ]
    answer = session.chat(messages, SamplingParams(max_tokens=32), tools=[WEATHER], tool_choice="none")
    assert answer.tool_calls == () and answer.text.strip()


# ---- the service ------------------------------------------------------------------


def test_service_tool_calls_in_openai_shape(server: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0)
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required", max_tokens=64)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name in {"add", "get_weather"}
    assert _validates(next(t for t in TOOLS if t["function"]["name"] == call.function.name), call.function.arguments)
    # The result goes back as a tool message; the answer comes as text.
    follow_up = [*messages, choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "5"}]
    answer = client.chat.completions.create(model=MODEL, messages=follow_up, tools=TOOLS, tool_choice="none", max_tokens=24)
    assert answer.choices[0].message.tool_calls is None and answer.choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=64, stream=True
    )
    chunks = [c for c in stream if c.choices]
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert [call.function.name for call in calls] == ["add"] and calls[0].index == 0
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "extra,fragment",
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}}, "is not one of the tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "cannot be combined"),
    ],
)
def test_service_bad_tools_are_400(server: dict[str, str], extra: dict[str, object], fragment: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    response = httpx.post(server["url"] + "/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


# ---- the command ------------------------------------------------------------------


def test_chat_command_calls_a_python_function(tmp_path: Path) -> None:
    env = {**os.environ, "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "history.sqlite3"), "XDG_DATA_HOME": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "chat", "--config", str(REPO / "config" / "config.json"), "--json",
         "--tool", f"{EXAMPLE_TOOLS}:get_weather", "--tool-choice", "required"],
        input="What is the weather in Paris?\n", capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    (line,) = answer["tool_calls"]
    assert line.startswith("get_weather(") and line.endswith("-> sunny, 21 C")
    assert answer["text"].strip() and answer["finish_reason"] in {"stop", "length"}
