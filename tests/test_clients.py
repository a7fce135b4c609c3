"""The service driven by client libraries as users point them at it:
LangChain's ChatOpenAI and the openai client's structured-output helper,
requests without max_tokens, clients that give up, and requests that run
past ``server.request_timeout``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from mistralvllm import ContextOverflowError, SamplingParams
from mistralvllm.context_window import context_overflow
from mistralvllm.server.serving import fit_default_max_tokens
from prompts import ITALY
from service import API_KEY, AUTH, MODEL, Server, metric, start_server, stored_turns

# What a user on this 2-core machine would wait for one call at most.
CALL_BOUND_S = 60
LONG = [{"role": "user", "content": "Write a very long story about a dragon who learns to fly, with many chapters."}]


class City(BaseModel):
    """A city and the country it is in."""

    name: str
    country: str


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(timezone: str) -> str:
    """The time in a timezone."""
    return f"noon in {timezone}"


def wait_until_idle(url: str) -> None:
    """Wait until no sequence runs in the engine (a generous bound: this is a wait, not a speed check)."""
    deadline = time.monotonic() + CALL_BOUND_S
    while metric(url, "mistralvllm_sequences_running") != 0:
        assert time.monotonic() < deadline, "the engine still runs a sequence"
        time.sleep(0.05)


def log_count(server: Server, status: str) -> int:
    """How many requests of ``server`` ended with ``status`` (their one log line each)."""
    return server.log.read_text().count(f" {status}: ")


@pytest.fixture
def chat_model(server: dict[str, str]) -> ChatOpenAI:
    return ChatOpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, model=MODEL, temperature=0, max_retries=0, timeout=CALL_BOUND_S)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A service whose config caps answers at 40 tokens and requests at 4 s."""
    server = start_server(
        tmp_path_factory.mktemp("limited"),
        extra_env={"MISTRALVLLM_SAMPLING__MAX_TOKENS": "40", "MISTRALVLLM_SERVER__REQUEST_TIMEOUT": "4"},
    )
    yield server
    server.stop()


def test_langchain_invoke_and_stream(chat_model: ChatOpenAI) -> None:
    reply = chat_model.invoke("What is the capital of Italy? Answer in one word.")
    assert "rome" in reply.content.lower()
    streamed = "".join(chunk.content for chunk in chat_model.stream("What is the capital of Italy? Answer in one word."))
    assert streamed == reply.content


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output_validates(chat_model: ChatOpenAI, method: str) -> None:
    structured = chat_model.with_structured_output(City, method=method)
    city = structured.invoke("Name a city in Spain and its country.")
    assert isinstance(city, City) and city.name and city.country


def test_langchain_json_mode_gives_a_json_object(chat_model: ChatOpenAI) -> None:
    structured = chat_model.with_structured_output(None, method="json_mode", include_raw=True)
    result = structured.invoke("Describe Madrid as a JSON object with the keys name and country.")
    assert isinstance(json.loads(result["raw"].content), dict)


def test_langchain_structured_output_streams(chat_model: ChatOpenAI) -> None:
    structured = chat_model.with_structured_output(City, method="json_schema")
    chunks = list(structured.stream("Name a city in Spain and its country."))
    assert isinstance(chunks[-1], City)


def test_langchain_bind_tools_named_and_auto(chat_model: ChatOpenAI) -> None:
    named = chat_model.bind_tools([get_weather, get_time], tool_choice="get_weather")
    reply = named.invoke("What is the weather like in Paris?")
    assert [call["name"] for call in reply.tool_calls] == ["get_weather"]
    assert isinstance(reply.tool_calls[0]["args"]["city"], str)
    auto = chat_model.bind_tools([get_weather, get_time], tool_choice="auto")
    reply = auto.invoke("What is the weather like in Paris?")
    assert reply.content or reply.tool_calls
    for call in reply.tool_calls:
        assert call["name"] in ("get_weather", "get_time")
    streamed = list(named.stream("What is the weather like in Rome?"))
    merged = streamed[0]
    for chunk in streamed[1:]:
        merged += chunk
    assert [call["name"] for call in merged.tool_calls] == ["get_weather"]


def test_openai_parse_helper(server: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0, timeout=CALL_BOUND_S)
    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Name a city in Spain and its country."}], response_format=City
    )
    city = completion.choices[0].message.parsed
    assert isinstance(city, City) and city.name


def test_json_schema_without_max_tokens_answers(server: dict[str, str]) -> None:
    """Regression: a schema request without max_tokens streamed nothing for minutes."""
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0, timeout=CALL_BOUND_S)
    # Strict, as client libraries send it: without additionalProperties false
    # the schema allows any further keys, and a 135M model keeps adding them.
    schema = {"name": "city", "strict": True, "schema": {**City.model_json_schema(), "additionalProperties": False}}
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a city in Spain."}], response_format={"type": "json_schema", "json_schema": schema}
    )
    City.model_validate_json(reply.choices[0].message.content)
    assert reply.choices[0].finish_reason == "stop"


def test_the_config_default_max_tokens_applies(limited: Server) -> None:
    client = openai.OpenAI(base_url=limited.url + "/v1", api_key=API_KEY, max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=LONG)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 40
    text = client.completions.create(model=MODEL, prompt="Once upon a time")
    assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 40
    asked = client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=5)
    assert asked.usage.completion_tokens == 5


def test_a_default_max_tokens_shrinks_to_the_room_left() -> None:
    """(A real prompt near the 8192-token window takes minutes to read on CPU.)"""
    seen: list[int] = []

    def check(sampling: SamplingParams) -> str:
        assert sampling.max_tokens is not None
        seen.append(sampling.max_tokens)
        if 8170 + sampling.max_tokens > 8192:
            raise context_overflow(8170, sampling.max_tokens, 8192)
        return "started"

    fitted, started = fit_default_max_tokens(check, SamplingParams(max_tokens=512, seed=3), asked=False)
    assert started == "started" and seen == [512, 22] and fitted == SamplingParams(max_tokens=22, seed=3)
    with pytest.raises(ContextOverflowError, match="max_tokens"):
        fit_default_max_tokens(check, SamplingParams(max_tokens=512), asked=True)


def test_a_request_past_the_timeout_ends_with_an_error_and_keeps_its_text(limited: Server) -> None:
    headers = {**AUTH, "X-Conversation-Id": "timeout-whole"}
    started = time.monotonic()
    response = httpx.post(
        limited.url + "/v1/chat/completions", json={"model": MODEL, "messages": LONG, "max_tokens": 4000}, headers=headers, timeout=60
    )
    assert time.monotonic() - started >= 4  # the limit, not earlier
    assert response.status_code == 504 and response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "request_timeout" and "server.request_timeout" in response.json()["error"]["message"]
    stream_headers = {**AUTH, "X-Conversation-Id": "timeout-stream"}
    body = {"model": MODEL, "messages": LONG, "max_tokens": 4000, "stream": True}
    with httpx.stream("POST", limited.url + "/v1/chat/completions", json=body, headers=stream_headers, timeout=60) as stream:
        events = [line.removeprefix("data: ") for line in stream.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[-1])["error"]["code"] == "request_timeout"
    turns = stored_turns(limited.history)
    for conversation in ("timeout-whole", "timeout-stream"):
        answer = turns[conversation][-1]
        assert answer["role"] == "assistant" and answer["interrupted"] == 1 and len(answer["content"]) > 0
    wait_until_idle(limited.url)


def test_a_long_request_does_not_hold_a_short_one(limited: Server) -> None:
    """The short one answers while the long one runs: the long one ends
    because its client closes it, not at the 4 s limit (as it would if the
    short one waited behind it)."""
    wait_until_idle(limited.url)
    timed_out, disconnected = log_count(limited, "timed out"), log_count(limited, "disconnected")
    client = openai.OpenAI(base_url=limited.url + "/v1", api_key=API_KEY, max_retries=0)
    long = client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=4000, stream=True)
    next(iter(long))
    short = client.chat.completions.create(model=MODEL, messages=ITALY, max_tokens=8, stream=True)
    first = next(c for c in short if c.choices and c.choices[0].delta.content)
    long.close()
    wait_until_idle(limited.url)
    assert first and (log_count(limited, "timed out"), log_count(limited, "disconnected")) == (timed_out, disconnected + 1)


def test_a_client_that_gives_up_frees_the_engine(limited: Server, tmp_path: Path) -> None:
    """A non-streaming request is aborted when its client goes away, like a stream."""
    client_script = (
        "import httpx, sys\n"
        f"httpx.post('{limited.url}/v1/chat/completions', headers={AUTH!r}, "
        f"json={{'model': {MODEL!r}, 'messages': {LONG!r}, 'max_tokens': 4000}}, timeout=60)\n"
    )
    wait_until_idle(limited.url)
    timed_out, disconnected = log_count(limited, "timed out"), log_count(limited, "disconnected")
    process = subprocess.Popen([sys.executable, "-c", client_script])
    deadline = time.monotonic() + 30
    while metric(limited.url, "mistralvllm_sequences_running") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1)
    process.kill()
    process.wait()
    wait_until_idle(limited.url)
    # Aborted when the client went, not run on to the 4 s limit.
    assert (log_count(limited, "timed out"), log_count(limited, "disconnected")) == (timed_out, disconnected + 1)


def test_every_request_ends_with_one_log_line(limited: Server) -> None:
    """(After the tests above, which timed out and abandoned requests on `limited`.)"""
    client = openai.OpenAI(base_url=limited.url + "/v1", api_key=API_KEY, max_retries=0)
    client.chat.completions.create(model=MODEL, messages=ITALY, max_tokens=8)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=ITALY, extra_body={"guided_regex": "("})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 9000}])
    log = limited.log.read_text()
    for status in (" ok: ", " length: ", " error: ", " timed out: ", " disconnected: ", ": error 400"):
        assert status in log, (status, log[-3000:])
