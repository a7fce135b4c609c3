"""Running services that the server, web-page and reliability tests talk to."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key"
MODEL = "SmolLM2-135M-Instruct.Q4_1"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A `mistralvllm serve` process with its history: a private SQLite file,
    or a PostgreSQL URL that other services may share."""

    process: subprocess.Popen[bytes]
    url: str
    history: Path | str
    log: Path
    env: dict[str, str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_server(
    tmp: Path,
    *,
    history: Path | str | None = None,
    extra_env: dict[str, str] | None = None,
    config: Path | None = None,
    models: tuple[str, ...] = (),
) -> Server:
    """Start the service with ``config`` (the default config) and ``models``
    (`serve`'s arguments and options) on a free loopback port and wait until
    its first model is loaded. ``history``: a SQLite file (by default one in
    ``tmp``) or a PostgreSQL URL."""
    port = free_port()
    history = history or tmp / "history.sqlite3"
    where = (
        {"MISTRALVLLM_HISTORY__PATH": "null", "MISTRALVLLM_HISTORY__URL": history}
        if isinstance(history, str)
        else {"MISTRALVLLM_HISTORY__PATH": str(history)}
    )
    env = {
        **os.environ,
        **where,
        "MISTRALVLLM_SERVER__API_KEY": API_KEY,
        "XDG_DATA_HOME": str(tmp / "data"),
        **(extra_env or {}),
    }

    log = tmp / f"server-{port}.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "mistralvllm", "serve", "--config", str(config or REPO / "config" / "config.json"), "--port", str(port), *models],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", history, log, env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/health").status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log.read_text()
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"the server did not become healthy:\n{log.read_text()}")


def run_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The shared service of the `server` fixture, as a dict of its places."""
    server = start_server(tmp_path_factory.mktemp("server"))
    yield {"url": server.url, "history": str(server.history), "log": str(server.log), "env": json.dumps(server.env)}
    server.stop()


def stored_turns(history: Path | str) -> dict[str, list[dict[str, object]]]:
    """Every conversation's messages, read straight from the database (a
    SQLite file or a PostgreSQL URL: the tables are the same)."""
    query = "SELECT conversation_id, role, content, finish_reason, interrupted FROM messages ORDER BY id"
    if isinstance(history, str):
        with psycopg.connect(history, row_factory=dict_row) as postgres:
            rows = postgres.execute(query).fetchall()
    else:
        with sqlite3.connect(history) as db:
            db.row_factory = sqlite3.Row
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = [dict(row) for row in db.execute(query).fetchall()]
    turns: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        turns.setdefault(row["conversation_id"], []).append(row)
    return turns


def metric(url: str, name: str) -> float:
    """The value of one sample in the service's /metrics."""
    for line in httpx.get(url + "/metrics", headers=AUTH, timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
