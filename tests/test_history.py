"""Chat history: storing, resuming, searching, exporting, and concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mistralvllm import ContextOverflowError
from mistralvllm.history import ChatHistory, HistoryError


def words(messages) -> int:
    """A stand-in tokenizer: one token per word."""
    return sum(len(m["content"].split()) for m in messages)


def test_turns_are_stored_and_resumed(tmp_path: Path) -> None:
    history = ChatHistory(tmp_path / "h.sqlite3")
    conversation = history.new(model="smollm2", config_digest="abc", system_prompt="Be brief.")
    conversation.record_turn("What is the capital of Italy?", "Rome.", finish_reason="stop")
    conversation.record_turn("And of Spain?", "Mad", finish_reason=None, interrupted=True)

    resumed = history.resume(conversation.id[:10])
    assert resumed.id == conversation.id
    assert resumed.system_prompt == "Be brief."
    assert [(m.role, m.content, m.interrupted) for m in resumed.messages] == [
        ("user", "What is the capital of Italy?", False),
        ("assistant", "Rome.", False),
        ("user", "And of Spain?", False),
        ("assistant", "Mad", True),
    ]
    summary = history.show(conversation.id)
    assert summary.title == "What is the capital of Italy?"
    assert summary.message_count == 4 and summary.model == "smollm2" and summary.config_digest == "abc"


def test_list_search_export_delete(tmp_path: Path) -> None:
    history = ChatHistory(tmp_path / "h.sqlite3")
    first = history.new()
    first.record_turn("Tell me about volcanoes", "Volcanoes erupt lava.")
    time.sleep(0.01)
    second = history.new(system_prompt="You are terse.")
    second.record_turn("What is the opposite of hot?", "Cold.")
    assert [c.id for c in history.list()] == [second.id, first.id]

    hits = history.search("lava erupt")
    assert [(h.conversation_id, h.role) for h in hits] == [(first.id, "assistant")]
    assert "[lava]" in hits[0].snippet
    assert history.search('"unbalanced') == []

    exported = json.loads(history.export(second.id, "json"))
    assert exported["system_prompt"] == "You are terse."
    assert [m["content"] for m in exported["messages"]] == ["What is the opposite of hot?", "Cold."]
    markdown = history.export(second.id, "markdown")
    assert markdown.startswith("# What is the opposite of hot?")
    assert "**assistant**:\n\nCold." in markdown

    history.delete(first.id)
    assert [c.id for c in history.list()] == [second.id]
    assert history.search("lava") == []
    with pytest.raises(HistoryError, match="no conversation"):
        history.resume(first.id)


def test_unknown_and_ambiguous_ids(tmp_path: Path) -> None:
    history = ChatHistory(tmp_path / "h.sqlite3")
    first, second = history.new(), history.new()
    with pytest.raises(HistoryError, match="no conversation 'zzz'"):
        history.show("zzz")
    with pytest.raises(HistoryError, match="several conversations"):
        history.show(os.path.commonprefix([first.id, second.id]))  # noqa: RUF071 (ids, not paths: the shared string prefix is meant)


def test_database_is_private(tmp_path: Path) -> None:
    history = ChatHistory(tmp_path / "h.sqlite3")
    assert stat.S_IMODE(os.stat(history.path).st_mode) == 0o600


def test_unusable_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(HistoryError, match="cannot open the history database"):
        ChatHistory(tmp_path / "file" / "h.sqlite3")


def test_fitting_drops_oldest_turns_and_keeps_the_system_prompt(tmp_path: Path) -> None:
    conversation = ChatHistory(tmp_path / "h.sqlite3").new(system_prompt="system words here")
    for i in range(5):
        conversation.record_turn(f"question {i} " + "pad " * 8, f"answer {i} " + "pad " * 8)
    fitted = conversation.fit("new question", count_tokens=words, budget=60, reserve=10)
    contents = [m["content"] for m in fitted.messages]
    assert contents[0] == "system words here"
    assert contents[-1] == "new question"
    assert fitted.dropped_turns == 3
    assert [c.split()[1] for c in contents[1:-1]] == ["3", "3", "4", "4"]
    assert fitted.prompt_tokens + 10 <= 60

    everything = conversation.fit("new question", count_tokens=words, budget=1000, reserve=10)
    assert everything.dropped_turns == 0 and len(everything.messages) == 12


def test_a_message_that_cannot_fit_reports_both_numbers(tmp_path: Path) -> None:
    conversation = ChatHistory(tmp_path / "h.sqlite3").new(system_prompt="sys")
    with pytest.raises(ContextOverflowError) as raised:
        conversation.fit("word " * 100, count_tokens=words, budget=50, reserve=5)
    assert raised.value.prompt_tokens == 101 and raised.value.context_length == 50
    assert "101" in str(raised.value) and "50" in str(raised.value)


def _write_turns(path: str, count: int, conversation_id: str | None = None) -> None:
    history = ChatHistory(path)
    conversation = history.resume(conversation_id) if conversation_id else history.new()
    for i in range(count):
        conversation.record_turn(f"q{i} from {os.getpid()}", f"a{i}")


def test_threads_and_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    shared = ChatHistory(path).new()
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(_write_turns, path, 20, shared.id if i % 2 else None) for i in range(8)]
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_write_turns, args=(path, 20, shared.id if i % 2 else None)) for i in range(4)]
        for process in processes:
            process.start()
        for job in jobs:
            job.result()
        for process in processes:
            process.join(timeout=120)
            assert process.exitcode == 0
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 12 * 20 * 2
        assert db.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (shared.id,)).fetchone()[0] == 6 * 20 * 2
    assert ChatHistory(path).show(shared.id).message_count == 240


WRITER = """
import sys
from mistralvllm.history import ChatHistory
conversation = ChatHistory(sys.argv[1]).new()
i = 0
while True:
    conversation.record_turn(f"question {i} " + "x" * 2000, f"answer {i} " + "y" * 2000)
    print(i, flush=True)
    i += 1
"""


def test_a_writer_killed_mid_turn_leaves_whole_turns(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    ChatHistory(path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    while int(writer.stdout.readline()) < 50:
        pass
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        roles = [row[0] for row in db.execute("SELECT role FROM messages ORDER BY id")]
    assert len(roles) >= 102
    assert roles == ["user", "assistant"] * (len(roles) // 2)
    conversation = ChatHistory(path).list()[0]
    assert conversation.message_count == len(roles)
