"""Security: loopback by default, a loud warning otherwise, the API key on
every route that touches the model or the history."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mistralvllm.config import Config, load_config
from service import API_KEY, REPO, free_port

PUBLIC = {("get", "/health")}


def key_refused(path: str, body: dict[str, Any]) -> bool:
    """Whether ``body`` refuses the key, in the shape of the API that ``path`` belongs to."""
    if path.startswith("/api/"):  # Ollama's: {"error": message}, nothing else
        return set(body) == {"error"} and isinstance(body["error"], str) and "API key" in body["error"]
    if path.startswith("/v1/messages"):  # Anthropic's: no other field, the error's type and message
        error = body["error"]
        return (
            body["type"] == "error"
            and set(body) == {"type", "error"}
            and set(error) == {"type", "message"}
            and error["type"] == "authentication_error"
        )
    return body["error"]["code"] == "invalid_api_key"  # OpenAI's


def test_the_default_bind_is_loopback() -> None:
    assert Config().server.host == "127.0.0.1"
    assert load_config(REPO / "config" / "config.json").server.host == "127.0.0.1"


def test_every_route_but_health_needs_the_key(server: dict[str, str]) -> None:
    schema = httpx.get(server["url"] + "/openapi.json").json()
    routes = [(method, path) for path, methods in schema["paths"].items() for method in methods]
    assert len(routes) >= 8 and set(routes) >= PUBLIC | {
        ("post", "/v1/messages"),
        ("post", "/v1/messages/count_tokens"),
        ("post", "/api/chat"),
        ("get", "/api/tags"),
    }
    wrong = "x" * len(API_KEY)  # same length: only the comparison can refuse it
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        url = server["url"] + re.sub(r"\{\w+\}", "some-id", path)
        for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": API_KEY}, {"x-api-key": wrong}):
            response = httpx.request(method.upper(), url, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert key_refused(path, response.json()), (method, path, headers, response.text)
    assert httpx.get(server["url"] + "/health").status_code == 200


def test_the_key_may_come_as_anthropics_x_api_key(server: dict[str, str]) -> None:
    assert httpx.get(server["url"] + "/v1/models", headers={"x-api-key": API_KEY}).status_code == 200


def test_binding_beyond_loopback_without_a_key_warns_loudly(tmp_path: Path) -> None:
    env = {**os.environ, "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h.sqlite3")}
    env.pop("MISTRALVLLM_SERVER__API_KEY", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mistralvllm",
            "serve",
            "--config",
            str(REPO / "config" / "config.json"),
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        output = ""
        while "WARNING" not in output and time.monotonic() < deadline and process.poll() is None:
            output += process.stdout.readline()
        assert "WARNING: listening on 0.0.0.0 without an API key" in output, output
    finally:
        process.kill()
        process.wait(timeout=30)
