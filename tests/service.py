"""The running service that the server and web-page tests talk to."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key"
MODEL = "SmolLM2-135M-Instruct.Q4_1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {
        **os.environ,
        "MISTRALVLLM_HISTORY__PATH": str(tmp / "history.sqlite3"),
        "MISTRALVLLM_SERVER__API_KEY": API_KEY,
        "XDG_DATA_HOME": str(tmp / "data"),
    }
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mistralvllm", "serve", "--config", str(REPO / "config" / "config.json"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (tmp / "server.log").read_text()
        time.sleep(0.2)
    else:
        raise AssertionError("the server did not become healthy")
    yield {"url": url, "history": env["MISTRALVLLM_HISTORY__PATH"], "log": str(tmp / "server.log"), "env": json.dumps(env)}
    process.terminate()
    process.wait(timeout=30)
