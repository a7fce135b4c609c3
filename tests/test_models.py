"""Several models in one `mistralvllm serve`: each request answered by the
model it names, the others loaded on first use, unloaded after keep_alive or
to stay within max_loaded_models, and every API's 404 naming the served ones."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from mistralvllm import ConfigError
from mistralvllm.config import load_config
from mistralvllm.history import SQLiteHistory
from service import API_KEY, AUTH, Server, start_server

ITALY = [{"role": "user", "content": "What is the capital of Italy? Answer in one word."}]
GREEDY = {"temperature": 0, "max_tokens": 8}


def write_config(path: Path, default_model: Path, tiny_model: Path, **server: object) -> Path:
    """smol (the bundled GGUF, alias smol-alias) first; tiny and tiny-b (the 2-layer random model) on demand."""
    config = {
        "models": [
            {"name": "smol", "path": str(default_model), "aliases": ["smol-alias"], "device": "cpu"},
            {"name": "tiny", "path": str(tiny_model), "device": "cpu"},
            {"name": "tiny-b", "path": str(tiny_model), "device": "cpu", "engine": {"max_num_seqs": 4}},
        ],
        "sampling": {"max_tokens": 16},
        "server": server,
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, default_model: Path, tiny_model: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("models")
    config = write_config(tmp / "models.json", default_model, tiny_model, max_loaded_models=2, keep_alive="-1")
    server = start_server(tmp, config=config)
    yield server
    server.stop()


def loaded(server: Server) -> list[str]:
    return [m["name"] for m in httpx.get(f"{server.url}/api/ps", headers=AUTH).json()["models"]]


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_models_load_on_first_use_answer_by_name_and_make_room(served: Server) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY)
    # Only the first model is loaded at start-up; every configured one is listed.
    assert loaded(served) == ["smol:latest"]
    assert [m.id for m in client.models.list()] == ["smol", "tiny", "tiny-b"]
    tags = httpx.get(f"{served.url}/api/tags", headers=AUTH).json()["models"]
    assert [(m["name"], m["details"]["format"]) for m in tags] == [
        ("smol:latest", "gguf"),
        ("tiny:latest", "safetensors"),
        ("tiny-b:latest", "safetensors"),
    ]

    smol = client.chat.completions.create(model="smol-alias", messages=ITALY, **GREEDY)  # type: ignore[arg-type]
    assert smol.model == "smol" and "Rome" in (smol.choices[0].message.content or "")
    tiny = client.chat.completions.create(model="tiny", messages=ITALY, **GREEDY)  # type: ignore[arg-type]
    assert tiny.model == "tiny" and tiny.choices[0].message.content != smol.choices[0].message.content
    streamed = client.chat.completions.create(model="tiny", messages=ITALY, stream=True, **GREEDY)  # type: ignore[arg-type]
    chunks = list(streamed)
    assert {c.model for c in chunks} == {"tiny"} and "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == tiny.choices[
        0
    ].message.content
    assert sorted(loaded(served)) == ["smol:latest", "tiny:latest"]
    ps = {m["name"]: m for m in httpx.get(f"{served.url}/api/ps", headers=AUTH).json()["models"]}
    assert ps["tiny:latest"]["details"]["format"] == "safetensors" and ps["smol:latest"]["size"] == 98362432
    assert "expires_at" not in ps["tiny:latest"]  # keep_alive -1: stays loaded

    # max_loaded_models 2: tiny-b unloads the least recently used idle model (smol).
    answer = ollama.Client(host=served.url, headers=AUTH).chat(model="tiny-b:latest", messages=ITALY, options={"num_predict": 4})
    assert answer.model == "tiny-b" and answer.message.content
    assert sorted(loaded(served)) == ["tiny-b:latest", "tiny:latest"]
    health = {m["name"]: m for m in httpx.get(f"{served.url}/health").json()["models"]}
    assert health["smol"]["loaded"] is False and health["tiny-b"]["loaded"] is True
    # Requests to the unloaded first model load it again.
    again = client.chat.completions.create(model="smol", messages=ITALY, **GREEDY)  # type: ignore[arg-type]
    assert again.choices[0].message.content == smol.choices[0].message.content
    assert "smol:latest" in loaded(served)

    # Each request's metrics are labelled with its model.
    metrics = httpx.get(f"{served.url}/metrics", headers=AUTH).text
    for name in ("smol", "tiny", "tiny-b"):
        assert f'vllm:prompt_tokens_total{{model_name="{name}"}}' in metrics, name


def test_keep_alive_unloads_and_concurrent_requests_load_once(served: Server) -> None:
    client = ollama.Client(host=served.url, headers=AUTH)
    client.generate(model="tiny", prompt="Hi", keep_alive="1s", options={"num_predict": 2})
    assert "tiny:latest" in loaded(served)
    expires = next(m for m in httpx.get(f"{served.url}/api/ps", headers=AUTH).json()["models"] if m["name"] == "tiny:latest")["expires_at"]
    assert expires.startswith("20")
    wait_until(lambda: "tiny:latest" not in loaded(served), timeout=10)
    # keep_alive 0 with an empty prompt unloads at once (Ollama's way to unload).
    load = client.generate(model="tiny-b", prompt="", keep_alive=0)
    assert load.done_reason == "unload"
    wait_until(lambda: "tiny-b:latest" not in loaded(served), timeout=5)

    log_before = served.log.read_text().count("model tiny loaded")

    async def two_at_once() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key=API_KEY) as aclient:
            answers = await asyncio.gather(*(aclient.chat.completions.create(model="tiny", messages=ITALY, **GREEDY) for _ in range(2)))  # type: ignore[call-overload]
        return [a.model for a in answers]

    assert asyncio.run(two_at_once()) == ["tiny", "tiny"]
    assert served.log.read_text().count("model tiny loaded") == log_before + 1


def test_unknown_model_is_a_404_naming_the_served_ones(served: Server) -> None:
    known = "'smol', 'tiny', 'tiny-b'"
    with pytest.raises(openai.NotFoundError) as openai_error:
        openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY).chat.completions.create(model="llama3", messages=ITALY)  # type: ignore[arg-type]
    assert known in str(openai_error.value) and openai_error.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(ollama.ResponseError) as ollama_error:
        ollama.Client(host=served.url, headers=AUTH).chat(model="llama3", messages=ITALY)
    assert ollama_error.value.status_code == 404 and known in ollama_error.value.error
    with pytest.raises(anthropic.NotFoundError) as anthropic_error:
        anthropic.Anthropic(base_url=served.url, api_key=API_KEY).messages.create(model="llama3", max_tokens=8, messages=ITALY)  # type: ignore[arg-type]
    assert anthropic_error.value.body["error"]["type"] == "not_found_error" and known in str(anthropic_error.value)  # type: ignore[index]


def test_chat_picks_a_configured_model_by_name(tmp_path: Path, default_model: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path / "models.json", default_model, tiny_model)
    env = {**os.environ, "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h.sqlite3"), "XDG_DATA_HOME": str(tmp_path / "data")}
    command = [sys.executable, "-m", "mistralvllm", "chat", "--config", str(config), "--json", "--model"]
    chat = subprocess.run([*command, "tiny"], input="Hi\n", capture_output=True, text=True, env=env, timeout=120)
    assert chat.returncode == 0, chat.stderr
    conversation = SQLiteHistory(env["MISTRALVLLM_HISTORY__PATH"]).show(json.loads(chat.stdout)["conversation_id"])
    assert conversation.model == str(tiny_model)
    unknown = subprocess.run([*command, "nope"], input="Hi\n", capture_output=True, text=True, env=env, timeout=120)
    assert unknown.returncode == 1 and "nor a configured model name (configured: smol, smol-alias, tiny, tiny-b)" in unknown.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "models", "--config", str(config)], capture_output=True, text=True, env={**env, "COLUMNS": "250"}
    )
    assert listed.returncode == 0 and all(name in listed.stdout for name in ("smol-alias", "tiny-b", "safetensors", "gguf")), listed.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"models": [{"name": "a"}, {"name": "b", "aliases": ["a"]}]}, "models[1]: the name 'a' is already taken by models[0]"),
        ({"models": [{"name": "a", "paht": "x.gguf"}]}, "models[0].paht: unknown key 'paht'; did you mean 'path'?"),
        ({"models": [{"path": "x.gguf"}]}, "models[0].name: field required"),
        ({"models": [{"name": "a"}], "model": {"device": "cpu"}}, "models: give each model's options in its entry, and leave out model"),
        ({"server": {"keep_alive": "forever"}}, "server.keep_alive: 'forever' is not a duration"),
        ({"server": {"max_loaded_models": 0}}, "server.max_loaded_models: input should be greater than or equal to 1"),
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path: Path, content: dict[str, object], message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert f"{path}: " in str(error.value) and message in str(error.value)


def test_keep_alive_durations_and_the_single_model_config(tmp_path: Path) -> None:
    server = load_config(environ={}).server
    assert server.keep_alive_s == 300 and server.max_loaded_models == 3
    assert [load_config(environ={"MISTRALVLLM_SERVER__KEEP_ALIVE": v}).server.keep_alive_s for v in ("1h30m", "-1", "0", "90", "2.5s")] == [
        5400,
        None,
        0,
        90,
        2.5,
    ]
    # Without `models`, the one model is named after its file, as before.
    (only,) = load_config(environ={"MISTRALVLLM_MODEL__PATH": str(tmp_path / "m.gguf")}).served_models()
    assert only.name == "m" and only.path == str(tmp_path / "m.gguf")


def test_model_paths_in_a_file_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "models.json"
    path.write_text(json.dumps({"models": [{"name": "a", "path": "../m.gguf", "lora": ["adapter"]}]}))
    (entry,) = load_config(path, environ={}).served_models()
    assert entry.path == str(tmp_path / "conf" / ".." / "m.gguf") and entry.lora == [str(tmp_path / "conf" / "adapter")]


def test_a_model_with_a_request_running_is_never_unloaded_to_make_room(served: Server) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY)
    # The random model picks any token: its end tokens (<|endoftext|>, <|im_end|>) are barred, so the answer runs on.
    no_end = {"0": -100, "2": -100}
    long_answer = {"model": "tiny", "messages": ITALY, "max_tokens": 6000, "temperature": 1.5, "logit_bias": no_end, "stream": True}
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=long_answer, headers=AUTH, timeout=60) as streaming:
        lines = streaming.iter_lines()  # kept: a closed iterator closes the stream
        next(lines)  # tiny is loaded and answering; it stays the least recently used model
        client.chat.completions.create(model="tiny-b", messages=ITALY, max_tokens=2)  # type: ignore[arg-type]
        assert sorted(loaded(served)) == ["tiny-b:latest", "tiny:latest"]
        # smol needs room: tiny-b goes, though tiny was used less recently, for tiny is busy.
        client.chat.completions.create(model="smol", messages=ITALY, max_tokens=2)  # type: ignore[arg-type]
        health = {m["name"]: m for m in httpx.get(f"{served.url}/health").json()["models"]}
        assert health["tiny"]["requests"] == 1, "the long answer ended before the test could use it"
        assert sorted(loaded(served)) == ["smol:latest", "tiny:latest"]


def test_max_loaded_mem_unloads_until_the_files_fit(tmp_path: Path, default_model: Path, tiny_model: Path) -> None:
    sizes = {"smol:latest": default_model.stat().st_size, "tiny:latest": sum(p.stat().st_size for p in tiny_model.iterdir() if p.is_file())}
    sizes["tiny-b:latest"] = sizes["tiny:latest"]
    bound_mib = -(-(sizes["smol:latest"] + sizes["tiny:latest"]) // 2**20)  # smol and tiny fit, not all three
    server = start_server(tmp_path, config=write_config(tmp_path / "models.json", default_model, tiny_model, max_loaded_mem=bound_mib))
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)
        client.chat.completions.create(model="tiny", messages=ITALY, max_tokens=2)  # type: ignore[arg-type]
        assert sorted(loaded(server)) == ["smol:latest", "tiny:latest"]
        # Three models are allowed (max_loaded_models), but their files are not: smol, the least recently used, goes.
        client.chat.completions.create(model="tiny-b", messages=ITALY, max_tokens=2)  # type: ignore[arg-type]
        assert sorted(loaded(server)) == ["tiny-b:latest", "tiny:latest"]
        assert sum(sizes[name] for name in loaded(server)) <= bound_mib * 2**20
    finally:
        server.stop()
