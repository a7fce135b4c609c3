"""The service, driven by the real `openai` client over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from mistralvllm.config import load_config
from mistralvllm.server import create_app
from prompts import HOT, ITALY, WATER
from service import API_KEY, MODEL, REPO, metric


@pytest.fixture
def client(server: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0)


def test_models_and_chat(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    reply = client.chat.completions.create(model=MODEL, messages=ITALY, max_tokens=32)
    assert "Rome" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens == 42


def test_streaming_matches_and_reports_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=32).choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=32, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole and "H2O" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_cached_tokens_and_fingerprint_reported(client: openai.OpenAI) -> None:
    """A repeated prompt is read from the prefix cache, and usage says how
    much of it (``prompt_tokens_details.cached_tokens``), whole and streamed."""
    rules = " ".join(f"Rule {n}: never mention the number {n * 7919} unless asked." for n in range(1, 40))
    prompt = f"{rules}\nQuestion: what is the first rule about?\nAnswer:"
    first = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert first.usage.prompt_tokens == again.usage.prompt_tokens > 400
    assert first.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens // 2
    assert again.usage.prompt_tokens_details.cached_tokens > again.usage.prompt_tokens // 2
    messages = [{"role": "system", "content": rules}, {"role": "user", "content": "What is the first rule about?"}]
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > chunks[-1].usage.prompt_tokens // 2
    fingerprints = {first.system_fingerprint, again.system_fingerprint, *(chunk.system_fingerprint for chunk in chunks)}
    assert len(fingerprints) == 1 and fingerprints.pop().startswith("fp_")


def test_stop_and_max_completion_tokens(client: openai.OpenAI) -> None:
    stopped = client.chat.completions.create(model=MODEL, messages=ITALY, stop="Rome")
    assert stopped.choices[0].finish_reason == "stop" and "Rome" not in stopped.choices[0].message.content
    short = client.chat.completions.create(model=MODEL, messages=HOT, max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_seed_repeats(client: openai.OpenAI) -> None:
    poem = [{"role": "user", "content": "Write a short poem about the sea."}]
    options = dict(model=MODEL, messages=poem, max_tokens=20, temperature=1.0, seed=5)
    client.chat.completions.create(**options)  # same engine state (prefix cache) for the two compared below
    first, second = (client.chat.completions.create(**options).choices[0].message.content for _ in range(2))
    assert first == second


def test_errors_in_openai_shape(client: openai.OpenAI, server: dict[str, str]) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=ITALY, temperature=7)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError, match=r"messages\.0\.role"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-5", messages=ITALY)
    wrong = openai.OpenAI(base_url=server["url"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.BadRequestError) as overflow:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 9000}])
    assert overflow.value.code == "context_length_exceeded"
    assert "8192" in str(overflow.value) and "9" in str(overflow.value)
    huge = httpx.post(server["url"] + "/v1/chat/completions", content=b"x" * (40 << 20), headers={"Authorization": f"Bearer {API_KEY}"})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    assert httpx.get(server["url"] + "/health").status_code == 200


def test_eight_concurrent_streams_all_finish_correctly(client: openai.OpenAI, server: dict[str, str]) -> None:
    questions = [(ITALY, "rome"), (WATER, "h2o"), (HOT, "cold"), (ITALY, "rome")] * 2
    seen = {"running": 0, "waiting": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen["running"] = max(seen["running"], metric(server["url"], "mistralvllm_sequences_running"))
            seen["waiting"] = max(seen["waiting"], metric(server["url"], "mistralvllm_sequences_waiting"))
            time.sleep(0.05)

    def ask(question) -> str:
        stream = client.chat.completions.create(model=MODEL, messages=question[0], max_tokens=40, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(ask, questions))
    finally:
        done.set()
        watcher.join()
    for (_, keyword), answer in zip(questions, answers, strict=True):
        assert keyword in answer.lower(), answer
    # The engine decodes them together (continuous batching, on CPU too).
    assert seen["running"] > 1


def test_disconnect_aborts_the_generation_and_keeps_the_partial_turn(server: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Conversation-Id": "disconnect-test"}
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}],
    }
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 30
    while metric(server["url"], "mistralvllm_sequences_running") != 0:
        assert time.monotonic() < deadline, "the sequence kept running after the client left"
        time.sleep(0.1)
    stored = httpx.get(server["url"] + "/v1/conversations/disconnect-test", headers=headers).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["interrupted"] is True
    assert 0 < len(stored["messages"][1]["content"]) < 2000


def test_conversations_continue_between_browser_and_cli(client: openai.OpenAI, server: dict[str, str]) -> None:
    client.chat.completions.create(model=MODEL, messages=ITALY, extra_headers={"X-Conversation-Id": "shared-chat"})
    env = json.loads(server["env"])
    cli = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "chat", "--config", str(REPO / "config" / "config.json"), "--resume", "shared-chat"],
        input="What is the chemical symbol for water?",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "H2O" in cli.stdout, cli.stderr
    listed = client.get("/conversations", cast_to=object)
    assert "shared-chat" in [c["id"] for c in listed["data"]]
    stored = client.get("/conversations/shared-chat", cast_to=object)
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [ITALY[0]["content"], "What is the chemical symbol for water?"]


def test_service_answers_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    config = load_config(environ={"MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h.sqlite3")})
    client = TestClient(create_app(config))  # no lifespan: the model never loads
    assert client.get("/health").status_code == 503
    refused = client.post("/v1/chat/completions", json={"model": MODEL, "messages": ITALY})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"


def test_response_format_json_schema_is_followed(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string"}, "country": {"type": "string"}},
        "required": ["capital", "country"],
        "additionalProperties": False,
    }
    for question in ("What is the capital of Italy? Reply in JSON.", "Name a country and its capital, as JSON."):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": question}],
            max_tokens=80,
            response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}},
        )
        answer = json.loads(reply.choices[0].message.content)
        assert set(answer) == {"capital", "country"}
        assert all(isinstance(v, str) for v in answer.values())
    with pytest.raises(openai.BadRequestError, match="json_schema is required"):
        client.chat.completions.create(model=MODEL, messages=ITALY, response_format={"type": "json_schema"})


def test_text_completions(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="The capital of Italy is", max_tokens=5)
    assert "Rome" in whole.choices[0].text
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 5
    streamed = client.completions.create(model=MODEL, prompt="The capital of Italy is", max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text


def test_request_size_and_max_tokens_limits_are_configurable(tmp_path: Path) -> None:
    environ = {
        "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h.sqlite3"),
        "MISTRALVLLM_SERVER__MAX_REQUEST_BYTES": "2048",
        "MISTRALVLLM_SERVER__MAX_TOKENS_LIMIT": "64",
    }
    with TestClient(create_app(load_config(environ=environ))) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        big = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 4000}]})
        assert big.status_code == 413
        greedy = client.post("/v1/chat/completions", json={"model": MODEL, "messages": ITALY, "max_tokens": 65})
        assert greedy.status_code == 400 and greedy.json()["error"]["param"] == "max_tokens"
        ok = client.post("/v1/chat/completions", json={"model": MODEL, "messages": ITALY, "max_tokens": 64})
        assert ok.status_code == 200 and "Rome" in ok.json()["choices"][0]["message"]["content"]


def test_metrics_also_under_vllms_names(client: openai.OpenAI, server: dict[str, str]) -> None:
    label = f'{{model_name="{MODEL}"}}'
    before = metric(server["url"], f"vllm:generation_tokens_total{label}")
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert answer.usage is not None
    assert metric(server["url"], f"vllm:generation_tokens_total{label}") == before + answer.usage.completion_tokens
    assert metric(server["url"], f"vllm:prompt_tokens_total{label}") >= answer.usage.prompt_tokens
    assert metric(server["url"], f"vllm:e2e_request_latency_seconds_count{label}") >= 1
    assert metric(server["url"], f"vllm:time_to_first_token_seconds_count{label}") >= 1
    assert metric(server["url"], f"vllm:num_requests_running{label}") >= 0
    assert metric(server["url"], f"vllm:num_requests_waiting{label}") == 0
