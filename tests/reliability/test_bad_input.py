"""The bad-input corpus: each case gets a specific, clear error, and none of
them crashes the service, the session or the history.

Config-file cases live in tests/test_config.py (33 of them) and topology
cases in tests/test_topology.py; this corpus covers HTTP bodies, Python API
arguments and model paths, plus config and topology files that are not even
well-formed text.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import httpx
import numpy
import pytest

from mistralvllm import ConfigError, ModelLoadError, RequestError, SamplingParams, Session, Topology
from mistralvllm.config import load_config
from prompts import ITALY
from service import AUTH, MODEL

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"  # Anthropic's
RESPONSES = "/v1/responses"
OLLAMA_CHAT, OLLAMA_GENERATE = "/api/chat", "/api/generate"
OK_MESSAGES = [{"role": "user", "content": "Hi"}]
MESSAGE_WITH_UNKNOWN_FIELD = [{"role": "user", "content": "Hi", "frobnicate": 1}]


def chat_body(**fields: object) -> dict[str, object]:
    return {"model": MODEL, "messages": OK_MESSAGES, "max_tokens": 4, **fields}


def ollama_body(**fields: object) -> dict[str, object]:
    return {"model": MODEL, "messages": OK_MESSAGES, "stream": False, "options": {"num_predict": 4}, **fields}


def generate_body(**fields: object) -> dict[str, object]:
    return {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}, **fields}


def responses_body(**fields: object) -> dict[str, object]:
    return {"model": MODEL, "input": "Hi", "max_output_tokens": 4, **fields}


def error_message(path: str, body: dict[str, object]) -> str:
    """The message of an error body, checked to be in the shape of the path's API."""
    if path.startswith("/api/"):  # Ollama's: {"error": message}
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return body["error"]
    if path.startswith(MESSAGES):
        assert set(body) == {"type", "error"} and body["type"] == "error", body
    error = body["error"]
    assert isinstance(error, dict) and error["type"], body
    message = error["message"]
    assert isinstance(message, str)
    return message


# (case name, path, raw body or JSON body, expected status, fragment of the error message)
HTTP_CASES: list[tuple[str, str, bytes | dict[str, object], int, str]] = [
    ("messages is a string", CHAT, chat_body(messages="hello"), 400, "messages"),
    ("max_tokens is text", CHAT, chat_body(max_tokens="ten"), 400, "max_tokens"),
    ("negative max_tokens", CHAT, chat_body(max_tokens=-5), 400, "max_tokens"),
    ("zero max_tokens", CHAT, chat_body(max_tokens=0), 400, "max_tokens"),
    ("huge max_tokens", CHAT, chat_body(max_tokens=10**12), 400, "max_tokens"),
    ("empty messages", CHAT, chat_body(messages=[]), 400, "messages"),
    ("invalid role", CHAT, chat_body(messages=[{"role": "wizard", "content": "hi"}]), 400, "role"),
    ("message without content", CHAT, chat_body(messages=[{"role": "user"}]), 400, "content"),
    ("content is a number", CHAT, chat_body(messages=[{"role": "user", "content": 42}]), 400, "content"),
    # Unknown top-level fields are ignored (tests/test_client_conventions.py); a part's are refused.
    ("unknown field in a message", CHAT, chat_body(messages=MESSAGE_WITH_UNKNOWN_FIELD), 400, "messages.0.frobnicate"),
    ("temperature is text", CHAT, chat_body(temperature="hot"), 400, "temperature"),
    ("negative temperature", CHAT, chat_body(temperature=-1), 400, "temperature"),
    ("top_p above 1", CHAT, chat_body(top_p=1.5), 400, "top_p"),
    ("n above the engine's sequences", CHAT, chat_body(n=33), 400, "n: 33 answers cannot run at once"),
    ("n above its limit", CHAT, chat_body(n=129), 400, "less than or equal to 128"),
    ("completion best_of", "/v1/completions", {"model": MODEL, "prompt": "Hi", "best_of": 2}, 400, "best_of is not supported"),
    ("stream is text", CHAT, chat_body(stream="yes"), 400, "stream"),
    ("seed is text", CHAT, chat_body(seed="lucky"), 400, "seed"),
    ("stop is a number", CHAT, chat_body(stop=7), 400, "stop"),
    ("model is a file path", CHAT, chat_body(model="/etc/passwd"), 404, "does not exist"),
    ("model missing", CHAT, {"messages": OK_MESSAGES}, 400, "model"),
    ("response_format type unknown", CHAT, chat_body(response_format={"type": "yaml"}), 400, "response_format"),
    ("tool without a valid name", CHAT, chat_body(tools=[{"type": "function", "function": {"name": "f g"}}]), 400, "tools[0].function.name"),
    (
        "tool_choice naming no tool",
        CHAT,
        chat_body(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice={"type": "function", "function": {"name": "g"}}),
        400,
        "not one of the tools",
    ),
    ("body is not JSON", CHAT, b"this is not json", 400, "JSON"),
    ("body is a JSON array", CHAT, b"[1, 2, 3]", 400, "object"),
    ("body is invalid UTF-8", CHAT, b'{"model": "\xff\xfe", "messages": []}', 400, "UTF-8"),
    ("deeply nested JSON", CHAT, b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "JSON"),
    ("40 MB body", CHAT, b'{"model": "' + b"x" * 40_000_000 + b'"}', 413, "larger than"),
    ("completion prompt is a list of numbers", "/v1/completions", {"model": MODEL, "prompt": [1, 2, 3]}, 400, "prompt"),
    ("anthropic: max_tokens missing", MESSAGES, {"model": MODEL, "messages": OK_MESSAGES}, 400, "max_tokens: Field required"),
    ("anthropic: max_tokens is text", MESSAGES, chat_body(max_tokens="ten"), 400, "max_tokens"),
    ("anthropic: zero max_tokens", MESSAGES, chat_body(max_tokens=0), 400, "max_tokens"),
    ("anthropic: huge max_tokens", MESSAGES, chat_body(max_tokens=10**12), 400, "max_tokens"),
    ("anthropic: messages is a string", MESSAGES, chat_body(messages="hello"), 400, "messages"),
    ("anthropic: empty messages", MESSAGES, chat_body(messages=[]), 400, "messages"),
    ("anthropic: system role in messages", MESSAGES, chat_body(messages=[{"role": "system", "content": "hi"}]), 400, "messages.0.role"),
    ("anthropic: content is a number", MESSAGES, chat_body(messages=[{"role": "user", "content": 42}]), 400, "a string or a list of content blocks"),
    ("anthropic: empty content list", MESSAGES, chat_body(messages=[{"role": "user", "content": []}]), 400, "messages.0.content"),
    (
        "anthropic: unknown block type",
        MESSAGES,
        chat_body(messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}]),
        400,
        "does not match any of the expected tags",
    ),
    (
        "anthropic: image block to a text model",
        MESSAGES,
        chat_body(
            messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]
        ),
        400,
        "reads text only",
    ),
    (
        "anthropic: document in a tool result",
        MESSAGES,
        chat_body(
            messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document", "source": {}}]}]}]
        ),
        400,
        "document blocks are not supported",
    ),
    (
        "anthropic: tool_use from the user",
        MESSAGES,
        chat_body(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
        400,
        "tool_use blocks belong in assistant messages",
    ),
    (
        "anthropic: tool input not an object",
        MESSAGES,
        chat_body(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}, *OK_MESSAGES]),
        400,
        "input",
    ),
    ("anthropic: system is a number", MESSAGES, chat_body(system=7), 400, "system"),
    ("anthropic: temperature above 1", MESSAGES, chat_body(temperature=1.5), 400, "temperature"),
    ("anthropic: top_k zero", MESSAGES, chat_body(top_k=0), 400, "top_k"),
    ("anthropic: stop_sequences is a string", MESSAGES, chat_body(stop_sequences="END"), 400, "stop_sequences"),
    ("anthropic: stream is text", MESSAGES, chat_body(stream="yes"), 400, "stream"),
    ("anthropic: unknown field in a message", MESSAGES, chat_body(messages=MESSAGE_WITH_UNKNOWN_FIELD), 400, "messages.0.frobnicate"),
    ("anthropic: tool name with a space", MESSAGES, chat_body(tools=[{"name": "f g", "input_schema": {}}]), 400, "tools.0.name"),
    ("anthropic: server tool", MESSAGES, chat_body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), 400, "tools.0.type"),
    (
        "anthropic: tool given twice",
        MESSAGES,
        chat_body(tools=[{"name": "f", "input_schema": {}}, {"name": "f", "input_schema": {}}]),
        400,
        "tools.1.name: 'f' is given twice",
    ),
    ("anthropic: tool_choice of no kind", MESSAGES, chat_body(tool_choice={"type": "some"}), 400, "tool_choice"),
    ("anthropic: tool_choice any without tools", MESSAGES, chat_body(tool_choice={"type": "any"}), 400, "tool_choice: 'any' needs tools"),
    ("anthropic: metadata.user_id too long", MESSAGES, chat_body(metadata={"user_id": "u" * 300}), 400, "metadata.user_id"),
    ("anthropic: model is a file path", MESSAGES, chat_body(model="/etc/passwd"), 404, "does not exist"),
    ("anthropic: body is not JSON", MESSAGES, b"this is not json", 400, "JSON"),
    ("anthropic: body is invalid UTF-8", MESSAGES, b'{"model": "\xff\xfe", "messages": []}', 400, "UTF-8"),
    ("anthropic: 40 MB body", MESSAGES, b'{"model": "' + b"x" * 40_000_000 + b'"}', 413, "larger than"),
    (
        "anthropic: count_tokens content is a number",
        MESSAGES + "/count_tokens",
        {"model": MODEL, "messages": [{"role": "user", "content": 1}]},
        400,
        "content",
    ),
    ("anthropic: count_tokens without messages", MESSAGES + "/count_tokens", {"model": MODEL}, 400, "messages"),
    ("conversation rename without title", "/v1/conversations/abc", {}, 400, "title"),
    ("responses input is a number", RESPONSES, responses_body(input=42), 400, "input"),
    ("responses input item of no known type", RESPONSES, responses_body(input=[{"type": "web_search_call"}]), 400, "input.0"),
    (
        "responses image input without its url",
        RESPONSES,
        responses_body(input=[{"role": "user", "content": [{"type": "input_image"}]}]),
        400,
        "image_url",
    ),
    ("responses max_output_tokens is text", RESPONSES, responses_body(max_output_tokens="ten"), 400, "max_output_tokens"),
    ("responses huge max_output_tokens", RESPONSES, responses_body(max_output_tokens=10**12), 400, "max_output_tokens"),
    ("responses hosted tool", RESPONSES, responses_body(tools=[{"type": "file_search", "vector_store_ids": []}]), 400, "function tools only"),
    ("responses tool_choice unknown", RESPONSES, responses_body(tool_choice="sometimes"), 400, "tool_choice"),
    ("responses text format unknown", RESPONSES, responses_body(text={"format": {"type": "yaml"}}), 400, "text.format"),
    ("responses store is text", RESPONSES, responses_body(store="yes"), 400, "store"),
    ("responses unknown previous id", RESPONSES, responses_body(previous_response_id="resp_0"), 404, "resp_0"),
    ("responses body is not JSON", RESPONSES, b"{input: hi}", 400, "JSON"),
    # Ollama's API: the same checks, answered in its shape ({"error": message}).
    ("ollama messages is a string", OLLAMA_CHAT, ollama_body(messages="hello"), 400, "messages"),
    ("ollama invalid role", OLLAMA_CHAT, ollama_body(messages=[{"role": "wizard", "content": "hi"}]), 400, "role"),
    ("ollama content is a number", OLLAMA_CHAT, ollama_body(messages=[{"role": "user", "content": 42}]), 400, "messages.0.content"),
    ("ollama unknown field in a message", OLLAMA_CHAT, ollama_body(messages=MESSAGE_WITH_UNKNOWN_FIELD), 400, "messages.0.frobnicate"),
    ("ollama stream is text", OLLAMA_CHAT, ollama_body(stream="yes"), 400, "stream"),
    ("ollama temperature is text", OLLAMA_CHAT, ollama_body(options={"temperature": "hot"}), 400, "options.temperature"),
    ("ollama negative num_predict", OLLAMA_CHAT, ollama_body(options={"num_predict": -5}), 400, "options.num_predict"),
    ("ollama stop is a string", OLLAMA_CHAT, ollama_body(options={"stop": "\n"}), 400, "options.stop"),
    ("ollama format unknown", OLLAMA_CHAT, ollama_body(format="yaml"), 400, "format"),
    ("ollama image in a message", OLLAMA_CHAT, ollama_body(messages=[{"role": "user", "content": "hi", "images": ["aGk="]}]), 400, "reads text only"),
    (
        "ollama tool call arguments are text",
        OLLAMA_CHAT,
        ollama_body(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}, *OK_MESSAGES]),
        400,
        "arguments",
    ),
    ("ollama model is a file path", OLLAMA_CHAT, ollama_body(model="/etc/passwd"), 404, "does not exist"),
    ("ollama model missing", OLLAMA_CHAT, {"messages": OK_MESSAGES}, 400, "model"),
    ("ollama body is not JSON", OLLAMA_CHAT, b"this is not json", 400, "JSON"),
    ("ollama 40 MB body", OLLAMA_CHAT, b'{"model": "' + b"x" * 40_000_000 + b'"}', 413, "larger than"),
    ("ollama template", OLLAMA_GENERATE, generate_body(template="{{ .Prompt }}"), 400, "template"),
    ("ollama raw with system", OLLAMA_GENERATE, generate_body(raw=True, system="Be brief."), 400, "system"),
    ("ollama raw with format", OLLAMA_GENERATE, generate_body(raw=True, format="json"), 400, "format"),
    ("ollama context tokens", OLLAMA_GENERATE, generate_body(context=[1, 2, 3]), 400, "context"),
    ("ollama prompt is a list", OLLAMA_GENERATE, generate_body(prompt=["a", "b"]), 400, "prompt"),
    ("ollama show without a model", "/api/show", {}, 400, "model"),
    ("ollama show an unknown model", "/api/show", {"model": "llama3"}, 404, "does not exist"),
    ("ollama embed input is a number", "/api/embed", {"model": MODEL, "input": 5}, 400, "input"),
    ("ollama embed with a chat model", "/api/embed", {"model": MODEL, "input": "hi"}, 400, "is a chat model"),
]


@pytest.mark.parametrize("limit", ["-67085686089297650274795520", "0", "100000", "ten"])
def test_conversation_list_limit_out_of_range(server: dict[str, str], limit: str) -> None:
    # Found by schemathesis: a limit beyond SQLite's integers was a 500.
    response = httpx.get(server["url"] + "/v1/conversations", params={"limit": limit}, headers=AUTH)
    assert response.status_code == 400 and "limit" in response.json()["error"]["message"], response.text


@pytest.mark.parametrize("name,path,body,status,fragment", HTTP_CASES, ids=[case[0] for case in HTTP_CASES])
def test_http_bad_input(server: dict[str, str], name: str, path: str, body: bytes | dict[str, object], status: int, fragment: str) -> None:
    method = "PATCH" if path.startswith("/v1/conversations/") else "POST"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.request(method, server["url"] + path, content=content, headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    message = error_message(path, response.json())
    assert fragment.lower() in message.lower(), message
    assert response.status_code < 500 or path == "/api/embed", "only Ollama's embedding is a server error (501, not implemented)"


def test_the_service_is_whole_after_the_corpus(server: dict[str, str]) -> None:
    # Runs after the HTTP cases (file order): still healthy, still answering,
    # and its history database intact.
    assert httpx.get(server["url"] + "/health").json()["status"] == "ok"
    reply = httpx.post(server["url"] + CHAT, json={"model": MODEL, "messages": ITALY, "max_tokens": 16}, headers=AUTH, timeout=60)
    assert "Rome" in reply.json()["choices"][0]["message"]["content"]
    message = httpx.post(server["url"] + MESSAGES, json={"model": MODEL, "messages": ITALY, "max_tokens": 16}, headers=AUTH, timeout=60)
    assert "Rome" in message.json()["content"][0]["text"]
    ollama_reply = httpx.post(server["url"] + OLLAMA_CHAT, json=ollama_body(messages=ITALY, options={"num_predict": 16}), headers=AUTH, timeout=60)
    assert "Rome" in ollama_reply.json()["message"]["content"]
    with sqlite3.connect(server["history"]) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---- the Python API -----------------------------------------------------------

API_CASES: list[tuple[str, dict[str, object], type[Exception], str]] = [
    ("max_tokens negative", {"messages": ITALY, "max_tokens": -1}, RequestError, "max_tokens"),
    ("temperature text", {"messages": ITALY, "temperature": "hot"}, RequestError, "temperature"),
    ("top_k negative", {"messages": ITALY, "top_k": -3}, RequestError, "top_k"),
    ("messages not a list", {"messages": "hello"}, RequestError, "messages"),
    ("message not a dict", {"messages": ["hello"]}, RequestError, "message"),
    ("role missing", {"messages": [{"content": "hi"}]}, RequestError, "role"),
    ("stop not strings", {"messages": ITALY, "stop": [1, 2]}, RequestError, "stop"),
    ("json_schema not a schema", {"messages": ITALY, "json_schema": "{not json"}, RequestError, "json_schema"),
]


@pytest.mark.parametrize("name,arguments,error,fragment", API_CASES, ids=[case[0] for case in API_CASES])
def test_python_api_bad_arguments(session: Session, name: str, arguments: dict[str, object], error: type[Exception], fragment: str) -> None:
    messages, sampling = arguments["messages"], {key: value for key, value in arguments.items() if key != "messages"}
    with pytest.raises(error) as raised:
        session.chat(messages, SamplingParams(**sampling))
    assert fragment in str(raised.value)
    # The session keeps working after every refusal.
    assert session.sequence_counts() == {"running": 0, "waiting": 0}


def test_session_still_answers_after_the_api_cases(session: Session) -> None:
    assert "Rome" in session.chat(ITALY, SamplingParams(max_tokens=16)).text


# ---- model paths --------------------------------------------------------------


def _safetensors_header_only(path: Path) -> None:
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [49152, 576], "data_offsets": [0, 49152 * 576 * 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)


def model_case(kind: str, tmp_path: Path, tiny_model: Path, default_model: Path) -> Path:
    """Build one broken model on disk and return the path to load."""
    if kind == "empty gguf file":
        (tmp_path / "empty.gguf").write_bytes(b"")
        return tmp_path / "empty.gguf"
    if kind == "gguf with a wrong version":
        data = bytearray(default_model.read_bytes()[:65536])
        data[4:8] = struct.pack("<I", 99)
        (tmp_path / "v99.gguf").write_bytes(data)
        return tmp_path / "v99.gguf"
    if kind == "directory named like a gguf":
        (tmp_path / "dir.gguf").mkdir()
        return tmp_path / "dir.gguf"
    if kind == "dangling symlink":
        (tmp_path / "link.gguf").symlink_to(tmp_path / "gone.gguf")
        return tmp_path / "link.gguf"
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    if kind == "truncated safetensors":
        weights = next(model.glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "safetensors with a lying header":
        _safetensors_header_only(next(model.glob("*.safetensors")))
    elif kind == "wrong architecture":
        config = json.loads((model / "config.json").read_text())
        config["architectures"] = ["BertForMaskedLM"]
        (model / "config.json").write_text(json.dumps(config))
    elif kind == "config.json not JSON":
        (model / "config.json").write_text("{ this is not json")
    elif kind == "no tokenizer":
        (model / "tokenizer.json").unlink()
    return model


MODEL_CASES = [
    ("empty gguf file", ""),
    ("gguf with a wrong version", ""),
    ("directory named like a gguf", ""),
    ("dangling symlink", "no such model file"),
    ("truncated safetensors", ""),
    ("safetensors with a lying header", ""),
    ("wrong architecture", "BertForMaskedLM"),
    ("config.json not JSON", "config.json"),
    ("no tokenizer", "tokenizer"),
]


@pytest.mark.parametrize("kind,fragment", MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_broken_model_files(tmp_path: Path, tiny_model: Path, default_model: Path, kind: str, fragment: str) -> None:
    path = model_case(kind, tmp_path, tiny_model, default_model)
    with pytest.raises(ModelLoadError) as raised:
        Session(path)
    message = str(raised.value)
    assert str(path) in message or path.name in message, message
    assert fragment in message, message


# ---- config and topology files that are not even text ---------------------------

FILE_CASES: list[tuple[str, bytes]] = [
    ("empty file", b""),
    ("binary garbage", os.urandom(64) + b"\0\xff"),
    ("UTF-16 text", '{"model": {}}'.encode("utf-16")),
    ("deeply nested JSON", b'{"server": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
]


@pytest.mark.parametrize("name,content", FILE_CASES, ids=[case[0] for case in FILE_CASES])
def test_config_files_that_are_not_json_text(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a file|directory") as raised:
        load_config(tmp_path)
    assert str(tmp_path) in str(raised.value)


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00garbage", b"0-10:\n  isq: [Q4K\n", b"- just\n- a list\n"], ids=["binary", "unclosed bracket", "a list"]
)
def test_topology_files_that_are_not_yaml_maps(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "topology.yml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        Topology.from_file(path)
    assert str(path) in str(raised.value)


def test_a_gguf_of_an_unknown_architecture_is_a_clear_error(tmp_path: Path) -> None:
    """A GGUF of an architecture the engine lacks names it and what loads,
    and nothing panics (the engine unwrapped its parse: patches/mistralrs-core-0.8.1/0015)."""
    architecture = "gemma3n"
    path = tmp_path / f"{architecture}.gguf"
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", numpy.zeros((4, 8), dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    load = f"from mistralvllm import Session\nSession({str(path)!r})"
    loaded = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=120, env={**os.environ, "RUST_BACKTRACE": "1"})
    assert loaded.returncode == 1 and "ModelLoadError" in loaded.stderr, loaded.stderr
    assert f"`{architecture}`" in loaded.stderr and "these architectures load: llama, mistral3, phi2, phi3" in loaded.stderr, loaded.stderr
    assert "panicked" not in loaded.stderr and "unwrap" not in loaded.stderr, loaded.stderr
