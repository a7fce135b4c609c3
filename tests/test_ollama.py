"""Ollama's API (`/api/...`), driven by the real `ollama` client over loopback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import gguf
import httpx
import jsonschema_rs
import ollama
import pytest
from fastapi.testclient import TestClient

import mistralvllm
from mistralvllm import default_model_path
from mistralvllm.config import load_config
from mistralvllm.model_metadata import human_count, read_gguf, safetensors_parameter_count
from mistralvllm.server import create_app, serving
from mistralvllm.server.ollama.requests import ChatRequest
from mistralvllm.server.state import ServiceState
from prompts import HOT, ITALY, WATER, WEATHER
from service import API_KEY, AUTH, MODEL, stored_turns

# The 135M model does not call tools on its own; an answer held to this
# schema is a call, which the engine returns as a structured tool call.
WEATHER_CALL = {
    "type": "object",
    "properties": {
        "name": {"enum": ["get_weather"]},
        "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
CAPITAL = {
    "type": "object",
    "properties": {"capital": {"type": "string"}, "country": {"type": "string"}},
    "required": ["capital", "country"],
    "additionalProperties": False,
}


@pytest.fixture
def client(server: dict[str, str]) -> ollama.Client:
    return ollama.Client(host=server["url"], headers={"Authorization": f"Bearer {API_KEY}"})


def assert_final(answer: ollama.ChatResponse | ollama.GenerateResponse, done_reason: str) -> None:
    """The last body: why it stopped, the token counts, and durations in nanoseconds."""
    assert answer.done is True and answer.done_reason == done_reason
    assert answer.prompt_eval_count > 0 and answer.eval_count > 0
    # Present and in nanoseconds (whole numbers); how long they are is benches/' business.
    for duration in (answer.prompt_eval_duration, answer.eval_duration, answer.total_duration, answer.load_duration):
        assert isinstance(duration, int) and duration >= 0


def test_chat_whole(client: ollama.Client) -> None:
    answer = client.chat(model=MODEL, messages=ITALY, options={"num_predict": 32})
    assert "Rome" in answer.message.content and answer.message.role == "assistant"
    assert answer.model == MODEL
    assert_final(answer, "stop")
    assert answer.prompt_eval_count == 42  # as the OpenAI route counts the same prompt


def test_chat_streams_json_lines_that_end_done(client: ollama.Client) -> None:
    whole = client.chat(model=MODEL, messages=WATER, options={"num_predict": 32}).message.content
    parts = list(client.chat(model=f"{MODEL}:latest", messages=WATER, options={"num_predict": 32}, stream=True))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == whole and "H2O" in whole
    assert_final(parts[-1], "stop")


def test_streaming_is_the_default_as_ndjson(server: dict[str, str]) -> None:
    body = {"model": MODEL, "messages": HOT, "options": {"num_predict": 4}}
    response = httpx.post(server["url"] + "/api/chat", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 4
    whole = httpx.post(server["url"] + "/api/chat", json={**body, "stream": False}, headers=AUTH, timeout=60)
    assert whole.headers["content-type"] == "application/json"
    assert whole.json()["message"]["content"] == "".join(line["message"]["content"] for line in lines)


def test_generate_whole_streamed_and_raw(client: ollama.Client) -> None:
    whole = client.generate(model=MODEL, prompt=WATER[0]["content"], options={"num_predict": 32})
    assert "H2O" in whole.response
    assert_final(whole, "stop")
    parts = list(client.generate(model=MODEL, prompt=WATER[0]["content"], options={"num_predict": 32}, stream=True))
    assert "".join(p.response for p in parts) == whole.response and parts[-1].done
    # A system prompt applies through the chat template.
    name = {"model": MODEL, "prompt": "What is your name?", "options": {"num_predict": 16}}
    pirate = client.generate(**name, system="You are a pirate. Start every answer with Arr!").response
    assert pirate.startswith("Arr") and "Arr" not in client.generate(**name).response
    # raw: the prompt is continued as it is, no chat template around it.
    raw = client.generate(model=MODEL, prompt="The capital of Italy is", raw=True, options={"num_predict": 5})
    assert "Rome" in raw.response and raw.prompt_eval_count == 5
    assert_final(raw, "length")


def test_an_empty_prompt_or_message_list_only_loads_the_model(client: ollama.Client) -> None:
    loaded = client.generate(model=MODEL)
    assert loaded.done and loaded.done_reason == "load" and loaded.response == "" and loaded.eval_count is None
    chat = client.chat(model=MODEL, messages=[])
    assert chat.done and chat.done_reason == "load" and chat.message.content == ""


def test_num_predict_caps_the_answer(client: ollama.Client) -> None:
    short = client.chat(model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}], options={"num_predict": 5})
    assert short.eval_count == 5 and short.done_reason == "length"
    streamed = list(client.generate(model=MODEL, prompt="Write a long story about a dragon.", options={"num_predict": 3}, stream=True))
    assert streamed[-1].eval_count == 3 and streamed[-1].done_reason == "length"


def test_seed_and_temperature_make_answers_repeatable(client: ollama.Client) -> None:
    poem = [{"role": "user", "content": "Write a short poem about the sea."}]

    def sample(seed: int) -> str:
        return client.chat(model=MODEL, messages=poem, options={"temperature": 1.0, "seed": seed, "num_predict": 16}).message.content

    sample(5)  # same engine state (prefix cache) for the two compared below
    assert sample(5) == sample(5)
    assert len({sample(5), sample(6), sample(7)}) > 1  # the temperature samples: seeds differ


def test_stop_cuts_the_answer(client: ollama.Client) -> None:
    full = client.chat(model=MODEL, messages=ITALY, options={"num_predict": 32}).message.content
    cut = client.chat(model=MODEL, messages=ITALY, options={"num_predict": 32, "stop": ["Rome"]})
    assert "Rome" in full and "Rome" not in cut.message.content
    assert full.startswith(cut.message.content) and cut.done_reason == "stop"


def test_format_json_and_a_json_schema(client: ollama.Client) -> None:
    question = [{"role": "user", "content": "What is the capital of Italy? Reply in JSON."}]
    keyed = [{"role": "user", "content": "Give the capital of Italy as a JSON object with the key capital."}]
    loose = client.chat(model=MODEL, messages=keyed, format="json", options={"num_predict": 64})
    assert loose.done_reason == "stop" and isinstance(json.loads(loose.message.content), dict)
    for answer in (
        client.chat(model=MODEL, messages=question, format=CAPITAL, options={"num_predict": 80}).message.content,
        client.generate(model=MODEL, prompt="Name a country and its capital, as JSON.", format=CAPITAL, options={"num_predict": 80}).response,
    ):
        parsed = json.loads(answer)
        assert jsonschema_rs.validator_for(CAPITAL).is_valid(parsed), parsed
        assert set(parsed) == {"capital", "country"}


def test_a_tool_call_comes_back_structured_and_its_result_goes_back(client: ollama.Client) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    answer = client.chat(model=MODEL, messages=[question], tools=[WEATHER], format=WEATHER_CALL, options={"num_predict": 64})
    (call,) = answer.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert answer.message.content == "" and answer.done_reason == "stop"
    streamed = list(client.chat(model=MODEL, messages=[question], tools=[WEATHER], format=WEATHER_CALL, options={"num_predict": 64}, stream=True))
    assert [p.message.tool_calls[0].function.arguments for p in streamed if p.message.tool_calls] == [{"city": "Paris"}]
    # The call (as the client got it) and the tool's result go back; the model answers in text.
    follow_up = [question, answer.message, {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"}]
    final = client.chat(model=MODEL, messages=follow_up, tools=[WEATHER], options={"num_predict": 48})
    assert final.message.content and not final.message.tool_calls


def test_tags_show_ps_and_version(client: ollama.Client, server: dict[str, str]) -> None:
    path = default_model_path()
    reader = gguf.GGUFReader(path)
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    file_type = gguf.LlamaFileType(reader.fields["general.file_type"].contents()).name.removeprefix("MOSTLY_")
    expected = {"format": "gguf", "family": "llama", "families": ["llama"], "parameter_size": human_count(parameters)}
    expected["quantization_level"] = file_type
    assert expected["parameter_size"] == "134.52M" and expected["quantization_level"] == "Q4_1"

    (listed,) = client.list().models
    assert listed.model == f"{MODEL}:latest" and listed.size == path.stat().st_size  # tagged, as Ollama lists names
    assert listed.details.model_dump(exclude_none=True) == expected and listed.modified_at is not None

    shown = client.show(listed.model)
    assert shown.details.model_dump(exclude_none=True) == expected
    assert shown.modelinfo["general.parameter_count"] == parameters and shown.modelinfo["llama.context_length"] == 8192
    assert shown.modelinfo["general.architecture"] == "llama" and "tokenizer.ggml.tokens" not in shown.modelinfo
    assert set(shown.capabilities) == {"completion", "tools"}

    (running,) = client.ps().models
    assert running.model == listed.model and running.context_length == 8192 and running.size_vram == 0  # the config runs on the CPU
    assert running.details.model_dump(exclude_none=True) == expected

    version = httpx.get(server["url"] + "/api/version", headers=AUTH)
    assert version.json() == {"version": mistralvllm.__version__}
    assert httpx.head(server["url"] + "/").status_code == 200  # the ollama CLI's heartbeat, no key needed


def test_the_gguf_and_its_safetensors_conversion_count_the_same_parameters(default_model: Path, plain_model: Path) -> None:
    assert safetensors_parameter_count(plain_model) == read_gguf(default_model).parameter_count


def test_a_chat_model_computes_no_embeddings(client: ollama.Client) -> None:
    for embed in (lambda: client.embed(model=MODEL, input="hello"), lambda: client.embeddings(model=MODEL, prompt="hello")):
        with pytest.raises(ollama.ResponseError) as raised:
            embed()
        assert raised.value.status_code == 400 and "is a chat model, which computes no embeddings" in raised.value.error


LONG_PROMPT = [{"role": "user", "content": "word " * 9000}]


@pytest.mark.parametrize(
    "call,status,fragment",
    [
        (lambda c: c.chat(model=MODEL, messages=ITALY, options={"temperature": "hot"}), 400, "options.temperature"),
        (lambda c: c.chat(model=MODEL, messages=ITALY, options={"num_predict": 0}), 400, "options.num_predict: Value error, expected a number"),
        (lambda c: c.chat(model="llama3.2", messages=ITALY), 404, f"model 'llama3.2' does not exist; this service serves '{MODEL}'"),
        (lambda c: list(c.chat(model="llama3.2", messages=ITALY, stream=True)), 404, f"this service serves '{MODEL}'"),
        (lambda c: c.show("llama3.2"), 404, f"this service serves '{MODEL}'"),
        (lambda c: c.chat(model=MODEL, messages=LONG_PROMPT, options={"num_predict": 8}), 400, "but the context window is 8192 tokens"),
        (lambda c: c.chat(model=MODEL, messages=[{"role": "user", "content": "hi", "images": ["aGk="]}]), 400, "reads text only"),
        (lambda c: c.generate(model=MODEL, prompt="hi", images=["aGk="]), 400, "reads text only"),
        (lambda c: c.generate(model=MODEL, prompt="hi", template="{{ .Prompt }}"), 400, "template: Value error, Ollama's Go prompt templates"),
        (lambda c: c.generate(model=MODEL, prompt="hi", raw=True, system="Be brief."), 400, "system: Value error, a raw prompt"),
        (lambda c: c.generate(model=MODEL, prompt="def f(", suffix="return 1"), 400, "suffix"),
        (lambda c: c.generate(model=MODEL, prompt="hi", think=True), 400, "think: "),
        (lambda c: c.chat(model=MODEL, messages=ITALY, keep_alive="forever"), 400, "keep_alive"),
        (lambda c: c.chat(model=MODEL, messages=ITALY, tools=[{"type": "function", "function": {"name": "f g"}}]), 400, "tools[0].function.name"),
    ],
    ids=[
        "wrong type",
        "num_predict 0",
        "unknown model",
        "unknown model, streamed",
        "show unknown model",
        "context overflow",
        "chat image",
        "generate image",
        "template",
        "raw with system",
        "suffix",
        "think",
        "keep_alive not a duration",
        "bad tool",
    ],
)
def test_bad_requests_raise_response_error_with_our_message(client: ollama.Client, call, status: int, fragment: str) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        call(client)
    assert raised.value.status_code == status and fragment in raised.value.error, raised.value


def test_missing_or_wrong_key_is_401(server: dict[str, str]) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        with pytest.raises(ollama.ResponseError) as raised:
            ollama.Client(host=server["url"], headers=headers).list()
        assert raised.value.status_code == 401 and "API key" in raised.value.error


def test_an_error_after_the_stream_started_comes_as_an_error_line(client: ollama.Client) -> None:
    # The engine compiles the schema when the request starts: the 200 and
    # the JSON lines have begun, so the error is the last line.
    with pytest.raises(ollama.ResponseError) as raised:
        list(client.chat(model=MODEL, messages=ITALY, format={"type": "no-such-type"}, stream=True))
    assert "no-such-type" in raised.value.error


def test_chats_are_stored_in_the_shared_history(server: dict[str, str]) -> None:
    client = ollama.Client(host=server["url"], headers={**AUTH, "X-Conversation-Id": "ollama-chat"})
    first = client.chat(model=MODEL, messages=ITALY, options={"num_predict": 32})
    follow_up = [*ITALY, {"role": "assistant", "content": first.message.content}, *WATER]
    second = "".join(p.message.content for p in client.chat(model=MODEL, messages=follow_up, options={"num_predict": 32}, stream=True))
    stored = stored_turns(Path(server["history"]))["ollama-chat"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", ITALY[0]["content"]),
        ("assistant", first.message.content),
        ("user", WATER[0]["content"]),
        ("assistant", second),
    ]
    assert all(m["finish_reason"] == "stop" and not m["interrupted"] for m in stored if m["role"] == "assistant")
    with sqlite3.connect(server["history"]) as db:
        assert db.execute("SELECT model FROM conversations WHERE id = 'ollama-chat'").fetchone()[0].endswith(f"{MODEL}.gguf")


def test_requests_wait_for_the_model_and_num_predict_minus_1_lifts_the_default(tmp_path: Path) -> None:
    environ = {"MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h.sqlite3"), "MISTRALVLLM_SAMPLING__MAX_TOKENS": "4"}
    with TestClient(create_app(load_config(environ=environ))) as client:
        # Sent while the model loads: answered once it is loaded, as Ollama loads a model.
        loaded = client.post("/api/generate", json={"model": MODEL})
        assert loaded.status_code == 200 and loaded.json()["done_reason"] == "load" and loaded.json()["load_duration"] > 0
        body = {"model": MODEL, "messages": ITALY, "stream": False}
        capped = client.post("/api/chat", json=body).json()
        assert capped["eval_count"] == 4 and capped["done_reason"] == "length"  # the config's max_tokens
        free = client.post("/api/chat", json={**body, "options": {"num_predict": -1}}).json()
        assert free["eval_count"] > 4 and free["done_reason"] == "stop" and "Rome" in free["message"]["content"]


def test_no_limit_keeps_the_services_max_tokens_limit(tmp_path: Path) -> None:
    environ = {
        "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h.sqlite3"),
        "MISTRALVLLM_SAMPLING__MAX_TOKENS": "512",
        "MISTRALVLLM_SERVER__MAX_TOKENS_LIMIT": "8",
    }
    state = ServiceState(load_config(environ=environ))
    unlimited = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}], options={"num_predict": -1})
    assert unlimited.options.unlimited and "max_tokens" not in unlimited.options.openai_fields()
    assert serving.request_sampling(state, unlimited.openai_request(MODEL), unlimited=True).max_tokens == 8
    assert serving.request_sampling(state, unlimited.openai_request(MODEL)).max_tokens == 512
