"""Faults: the server killed mid-answer, clients that go away, a model file
that is gone at start, a full disk under the history database."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from prompts import ITALY
from service import AUTH, MODEL, REPO, free_port, start_server, stored_turns
from streams import LiveStreams, finished_turn

CHAT = "/v1/chat/completions"


def test_kill_9_during_eight_streams_loses_no_turn(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        for i in range(2):
            finished_turn(server.url, f"done-{i}")
        streams = LiveStreams({f"live-{i}": server.url for i in range(8)})
        streams.wait_for_a_saved_partial(set(streams.servers))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
        streams.join()
        received, finished = streams.received, streams.finished

        turns = stored_turns(server.history)
        for i in range(2):
            question, answer = turns[f"done-{i}"]
            assert (question["role"], answer["role"], answer["interrupted"]) == ("user", "assistant", 0)
            assert answer["finish_reason"] in ("stop", "length") and "Rome" in str(answer["content"])
        assert len(finished) < len(received), "the kill came after every answer had ended"
        for conversation_id, text in received.items():
            question, answer = turns[conversation_id]  # every accepted question is stored
            assert conversation_id in str(question["content"])
            if conversation_id in finished:
                assert answer["interrupted"] == 0 and answer["content"] == text
            else:
                assert answer["interrupted"] == 1 and answer["finish_reason"] is None
                assert text.startswith(str(answer["content"]))  # what was saved is what was sent
        running = [turns[c][1] for c in received if c not in finished and received[c]]
        assert any(answer["content"] for answer in running), "the running answer's text was saved"

        restarted = start_server(tmp_path, history=server.history)
        try:
            reply = httpx.post(
                restarted.url + CHAT,
                json={"model": MODEL, "messages": ITALY, "max_tokens": 12},
                headers={**AUTH, "X-Conversation-Id": "live-0"},
                timeout=60,
            )
            assert reply.status_code == 200
            stored = httpx.get(restarted.url + "/v1/conversations/live-0", headers=AUTH).json()
            assert [m["interrupted"] for m in stored["messages"]] == [False, True, False, False]
        finally:
            restarted.stop()
    finally:
        server.stop()


def running_sequences(url: str) -> tuple[float, float]:
    values = {}
    for line in httpx.get(url + "/metrics", headers=AUTH).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("mistralvllm_sequences_running", "mistralvllm_sequences_waiting"):
            values[name] = float(value)
    return values["mistralvllm_sequences_running"], values["mistralvllm_sequences_waiting"]


def test_disconnected_clients_free_their_sequences(server: dict[str, str]) -> None:
    def leave_after_first_chunk() -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Count from one to two hundred."}], "max_tokens": 300, "stream": True}
        with httpx.stream("POST", server["url"] + CHAT, json=body, headers=AUTH, timeout=120) as response:
            for line in response.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    return  # closing the connection mid-answer

    threads = [threading.Thread(target=leave_after_first_chunk) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    deadline = time.monotonic() + 30
    while running_sequences(server["url"]) != (0.0, 0.0):
        assert time.monotonic() < deadline, f"sequences still held: {running_sequences(server['url'])}"
        time.sleep(0.2)
    reply = httpx.post(server["url"] + CHAT, json={"model": MODEL, "messages": ITALY, "max_tokens": 12}, headers=AUTH, timeout=60)
    assert "Rome" in reply.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("kind", ["removed", "dangling symlink", "a directory"])
def test_model_gone_at_start_is_a_clear_exit(tmp_path: Path, default_model: Path, kind: str) -> None:
    model = tmp_path / "model.gguf"
    if kind == "dangling symlink":
        model.symlink_to(tmp_path / "moved-away.gguf")
    elif kind == "a directory":
        model.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "serve", "--config", str(REPO / "config" / "config.json"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MISTRALVLLM_MODEL__PATH": str(model), "MISTRALVLLM_HISTORY__ENABLED": "false"},
    )
    assert result.returncode == 1, result.stderr
    assert str(model) in result.stderr


def test_full_disk_fails_the_request_cleanly(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        completed, failure = [], None
        for i in range(80):
            if i == 3:
                # From now on no file of the server's may grow past the
                # database's present size: to SQLite that is a full disk.
                limit = server.history.stat().st_size
                resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (limit, limit))
            reply = httpx.post(
                server.url + CHAT,
                json={"model": MODEL, "messages": ITALY, "max_tokens": 4},
                headers={**AUTH, "X-Conversation-Id": f"turn-{i}"},
                timeout=60,
            )
            if reply.status_code != 200:
                failure = reply
                break
            completed.append(f"turn-{i}")
        assert failure is not None, "the history never filled up"
        assert failure.status_code == 507
        error = failure.json()["error"]
        assert error["code"] == "history_write_failed" and str(server.history) in error["message"]
        # The service keeps answering what needs no history, and stays healthy.
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
        reply = httpx.post(server.url + CHAT, json={"model": MODEL, "messages": ITALY, "max_tokens": 12}, headers=AUTH, timeout=60)
        assert "Rome" in reply.json()["choices"][0]["message"]["content"]
    finally:
        server.stop()
    turns = stored_turns(server.history)
    *whole, last = completed
    assert len(whole) >= 2 and all(len(turns[c]) == 2 and turns[c][1]["interrupted"] == 0 for c in whole)
    # The last answer was sent; the disk may have filled while it was stored
    # (then its question stays, the answer is kept as interrupted and the log says so).
    assert len(turns[last]) == 2
    if turns[last][1]["interrupted"]:
        assert "could not store the answer" in server.log.read_text()
