"""Chat history: storing, resuming, searching, exporting, and concurrent
writers, in SQLite and in PostgreSQL (a server the test suite starts itself)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from mistralvllm import ContextOverflowError
from mistralvllm.config import HistorySection
from mistralvllm.history import (
    ConversationExistsError,
    HistoryDatabaseError,
    HistoryError,
    HistoryStore,
    HistoryWriteError,
    SQLiteHistory,
    StoredMessage,
    open_history,
)
from postgres_server import PASSWORD, PostgresServer
from service import free_port


@pytest.fixture(params=["sqlite", "postgres"])
def history_section(request: pytest.FixtureRequest, tmp_path: Path) -> HistorySection:
    """The config of a new, empty history of each kind."""
    if request.param == "sqlite":
        return HistorySection(path=str(tmp_path / "h.sqlite3"))
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return HistorySection(url=postgres.new_database())


@pytest.fixture
def history(history_section: HistorySection) -> Iterator[HistoryStore]:
    store = open_history(history_section)
    yield store
    store.close()


def words(messages) -> int:
    """A stand-in tokenizer: one token per word."""
    return sum(len(m["content"].split()) for m in messages)


def test_turns_are_stored_and_resumed(history: HistoryStore) -> None:
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


def test_images_are_stored_once_by_digest(history: HistoryStore) -> None:
    """A question's images come back in order; an image asked about twice,
    in two conversations, is one row; deleting its last conversation drops it."""
    red, blue = b"\x89PNG\r\n\x1a\nred", b"\x89PNG\r\n\x1a\nblue"
    first = history.new()
    first.begin_turn("Which is redder?", images=[red, blue]).finish("The first.")
    second = history.new()
    second.begin_turn("And this?", images=[red]).finish("Red.")
    assert [m.images for m in history.messages(first.id)] == [(red, blue), ()]
    assert history.resume(second.id).messages[0].as_request() == {
        "role": "user",
        "content": [{"type": "image", "image": red}, {"type": "text", "text": "And this?"}],
    }
    exported = json.loads(history.export(first.id))
    assert [image["sha256"] for image in exported["messages"][0]["images"]] == [hashlib.sha256(red).hexdigest(), hashlib.sha256(blue).hexdigest()]
    history.delete(first.id)
    assert history.messages(second.id)[0].images == (red,)


def test_reasoning_is_kept_apart_and_not_sent_back(history: HistoryStore) -> None:
    conversation = history.new()
    conversation.record_turn("Why is the sky blue?", "Rayleigh scattering.", reasoning="Short waves scatter more.", finish_reason="stop")
    question, answer = history.messages(conversation.id)
    assert (answer.content, answer.reasoning, question.reasoning) == ("Rayleigh scattering.", "Short waves scatter more.", None)
    assert answer.as_request() == {"role": "assistant", "content": "Rayleigh scattering."}
    assert "> *thinking:* Short waves scatter more." in history.export(conversation.id, "markdown")
    assert json.loads(history.export(conversation.id))["messages"][1]["reasoning"] == "Short waves scatter more."


def test_a_version_1_sqlite_history_gains_the_new_columns(tmp_path: Path) -> None:
    """A database written before images and reasoning were stored opens, keeps its turns and stores both."""
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', created REAL NOT NULL,"
            " updated REAL NOT NULL, model TEXT, config_digest TEXT, system_prompt TEXT);"
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL REFERENCES conversations(id)"
            " ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL, prompt_tokens INTEGER,"
            " completion_tokens INTEGER, time_to_first_token_s REAL, decode_tok_per_s REAL, finish_reason TEXT,"
            " interrupted INTEGER NOT NULL DEFAULT 0, dropped_turns INTEGER NOT NULL DEFAULT 0);"
            "INSERT INTO conversations VALUES ('old', 'Old', 1.0, 1.0, NULL, NULL, NULL);"
            "INSERT INTO messages (conversation_id, role, content, created) VALUES ('old', 'user', 'Hello', 1.0), ('old', 'assistant', 'Hi', 1.0);"
            "PRAGMA user_version = 1;"
        )
    history = SQLiteHistory(path)
    assert [(m.content, m.reasoning, m.images) for m in history.messages("old")] == [("Hello", None, ()), ("Hi", None, ())]
    resumed = history.resume("old")
    resumed.begin_turn("Look", images=[b"\x89PNG\r\n\x1a\nx"]).finish("Seen.", reasoning="Hm.")
    assert [(m.reasoning, m.images) for m in history.messages("old")][2:] == [(None, (b"\x89PNG\r\n\x1a\nx",)), ("Hm.", ())]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)


def test_list_search_export_delete(history: HistoryStore) -> None:
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
    assert [h.role for h in history.search("opposite -hot")] == ["user"]  # every word is a word, none is syntax

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


def test_unknown_and_ambiguous_ids(history: HistoryStore) -> None:
    first, second = history.new(), history.new()
    with pytest.raises(HistoryError, match="no conversation 'zzz'"):
        history.show("zzz")
    with pytest.raises(HistoryError, match="several conversations"):
        history.show(os.path.commonprefix([first.id, second.id]))  # noqa: RUF071 (ids, not paths: the shared string prefix is meant)


def test_client_chosen_ids(history: HistoryStore) -> None:
    history.new(conversation_id="chat-1").record_turn("first", "one")
    history.new(conversation_id="chat-10").record_turn("tenth", "ten")
    # An id that starts another is still its own conversation's.
    assert [m.content for m in history.resume("chat-1").messages] == ["first", "one"]
    assert history.show("CHAT-10").id == "chat-10"  # prefixes match in any case
    with pytest.raises(ConversationExistsError, match="'chat-1' exists already"):
        history.new(conversation_id="chat-1")
    with pytest.raises(HistoryError, match="expected 1-64 letters"):
        history.new(conversation_id="no spaces")


def test_a_turn_stores_its_preceding_messages_and_a_question_of_any_role(history: HistoryStore) -> None:
    # As the Responses API stores a request: the conversation before it and
    # its input, the last message (here a tool's result) as the question.
    now = time.time()
    preceding = [StoredMessage("user", "What is 2+2? Use the tool.", now), StoredMessage("assistant", '{"name": "add"}', now)]
    conversation = history.new(conversation_id="resp_1")
    turn = conversation.begin_turn("4", role="tool", preceding=preceding)
    assert [m.content for m in conversation.messages] == ["What is 2+2? Use the tool.", '{"name": "add"}']
    turn.finish("2+2 is 4.", finish_reason="stop")

    expected = [("user", "What is 2+2? Use the tool."), ("assistant", '{"name": "add"}'), ("tool", "4"), ("assistant", "2+2 is 4.")]
    assert [(m.role, m.content) for m in conversation.messages] == expected
    assert [(m.role, m.content) for m in history.messages("resp_1")] == expected
    assert history.show("resp_1").title == "4"

    # One transaction: a message the database refuses stores none of the others.
    with pytest.raises(HistoryWriteError):
        conversation.begin_turn("and 3+3?", preceding=[StoredMessage("user", "kept?", now), StoredMessage("robot", "refused", now)])
    assert [(m.role, m.content) for m in history.messages("resp_1")] == expected
    assert [(m.role, m.content) for m in conversation.messages] == expected


def test_database_is_private(tmp_path: Path) -> None:
    history = SQLiteHistory(tmp_path / "h.sqlite3")
    assert stat.S_IMODE(os.stat(history.path).st_mode) == 0o600


def test_unusable_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(HistoryError, match=r"history\.path: .* cannot open the history database"):
        open_history(HistorySection(path=str(tmp_path / "file" / "h.sqlite3")))


def test_fitting_drops_oldest_turns_and_keeps_the_system_prompt(tmp_path: Path) -> None:
    conversation = SQLiteHistory(tmp_path / "h.sqlite3").new(system_prompt="system words here")
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
    conversation = SQLiteHistory(tmp_path / "h.sqlite3").new(system_prompt="sys")
    with pytest.raises(ContextOverflowError) as raised:
        conversation.fit("word " * 100, count_tokens=words, budget=50, reserve=5)
    assert raised.value.prompt_tokens == 101 and raised.value.context_length == 50
    assert "101" in str(raised.value) and "50" in str(raised.value)


def _write_turns(section: str, count: int, conversation_id: str | None = None) -> None:
    history = open_history(HistorySection.model_validate_json(section))
    conversation = history.resume(conversation_id) if conversation_id else history.new()
    writer = f"{os.getpid()}-{threading.get_ident()}"
    for i in range(count):
        conversation.record_turn(f"q{i} from {writer}", f"a{i} from {writer}")
    history.close()


def test_threads_and_processes_writing_at_once_lose_nothing(history_section: HistorySection, history: HistoryStore) -> None:
    section = history_section.model_dump_json()
    shared = history.new()
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(_write_turns, section, 20, shared.id if i % 2 else None) for i in range(8)]
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_write_turns, args=(section, 20, shared.id if i % 2 else None)) for i in range(4)]
        for process in processes:
            process.start()
        for job in jobs:
            job.result()
        for process in processes:
            process.join(timeout=120)
            assert process.exitcode == 0
    conversations = history.list(limit=None)
    assert len(conversations) == 1 + 6
    assert sum(c.message_count for c in conversations) == 12 * 20 * 2
    assert history.show(shared.id).message_count == 6 * 20 * 2
    # Six writers took turns in one conversation: each question is stored
    # right before its answer, each writer's turns in the order it wrote them.
    messages = history.messages(shared.id)
    assert [m.role for m in messages] == ["user", "assistant"] * (6 * 20)
    assert all(answer.content == "a" + question.content[1:] for question, answer in zip(messages[::2], messages[1::2], strict=True))
    for writer in {m.content.split(" from ")[1] for m in messages}:
        assert [m.content.split()[0] for m in messages if m.content.endswith(f" from {writer}")] == [f"{k}{i}" for i in range(20) for k in "qa"]


WRITER = """
import sys
from mistralvllm.config import HistorySection
from mistralvllm.history import open_history
conversation = open_history(HistorySection.model_validate_json(sys.argv[1])).new()
i = 0
while True:
    conversation.record_turn(f"question {i} " + "x" * 2000, f"answer {i} " + "y" * 2000)
    print(i, flush=True)
    i += 1
"""


def test_a_writer_killed_mid_turn_leaves_whole_turns(history_section: HistorySection, history: HistoryStore) -> None:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, history_section.model_dump_json()], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    while int(writer.stdout.readline()) < 50:
        pass
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    if isinstance(history, SQLiteHistory):
        with sqlite3.connect(history.path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conversation = history.list()[0]
    messages = history.messages(conversation.id)
    assert len(messages) >= 102
    assert [m.role for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    assert not any(m.interrupted for m in messages[:-2])  # only the turn it was writing may be left unfinished
    assert conversation.message_count == len(messages)


# ---- PostgreSQL: what SQLite has no counterpart of -----------------------------


def test_services_starting_together_create_the_schema_once(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    start = threading.Barrier(8)

    def open_at_once() -> HistoryStore:
        start.wait()
        return open_history(HistorySection(url=url))

    with ThreadPoolExecutor(max_workers=8) as pool:
        stores = list(pool.map(lambda _: open_at_once(), range(8)))
    stores[0].new().record_turn("hello", "hi")
    assert all(store.list()[0].message_count == 2 for store in stores)
    for store in stores:
        store.close()
    with psycopg.connect(url) as db:
        assert db.execute("SELECT count(*) FROM history_schema").fetchone() == (1,)


def test_a_lost_connection_is_replaced_and_an_unreachable_database_is_named(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    name = url.rsplit("/", 1)[1]
    history = open_history(HistorySection(url=url))
    history.new(conversation_id="kept").record_turn("before", "the restart")
    with psycopg.connect(postgres.url(), autocommit=True) as admin:

        def drop_connections() -> None:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

        drop_connections()  # as a server restart does: the kept connections are gone
        history.resume("kept").record_turn("after", "it")
        assert len(history.messages("kept")) == 4

        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        drop_connections()
        try:
            with pytest.raises(HistoryDatabaseError, match=f"cannot connect to the PostgreSQL server at 127.0.0.1:{postgres.port}") as raised:
                history.messages("kept")
            assert PASSWORD not in str(raised.value)
            with pytest.raises(HistoryDatabaseError, match="cannot connect"):
                history.resume("kept")
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    assert len(history.messages("kept")) == 4
    history.close()


def test_connection_errors_name_the_field_and_host_but_not_the_password(postgres: PostgresServer) -> None:
    wrong_password = postgres.url(password="wrong-secret")
    with pytest.raises(HistoryError) as raised:
        open_history(HistorySection(url=wrong_password))
    message = str(raised.value)
    assert message.startswith(f"history.url: cannot connect to the PostgreSQL server at 127.0.0.1:{postgres.port} ")
    assert "password authentication failed" in message and "wrong-secret" not in message

    nobody = f"postgresql://someone:{PASSWORD}@127.0.0.1:{free_port()}/db"
    with pytest.raises(HistoryError, match=r"history.url: cannot connect to the PostgreSQL server at 127.0.0.1:\d+ .*refused") as raised:
        open_history(HistorySection(url=nobody))
    assert PASSWORD not in str(raised.value)


def test_the_commands_use_a_postgres_history(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    history = open_history(HistorySection(url=url))
    history.new(conversation_id="from-a-service").record_turn("Tell me about volcanoes", "Volcanoes erupt lava.")
    history.close()
    env = {**os.environ, "MISTRALVLLM_HISTORY__URL": url, "XDG_DATA_HOME": str(tmp_path), "COLUMNS": "200"}
    found = subprocess.run([sys.executable, "-m", "mistralvllm", "history", "search", "lava"], capture_output=True, text=True, env=env, timeout=60)
    assert found.returncode == 0 and "from-a-service" in found.stdout, found.stdout + found.stderr

    env["MISTRALVLLM_HISTORY__URL"] = f"postgresql://someone:{PASSWORD}@127.0.0.1:{free_port()}/db"
    for command in (["history", "list"], ["serve", "--port", str(free_port())]):
        down = subprocess.run([sys.executable, "-m", "mistralvllm", *command], capture_output=True, text=True, env=env, timeout=120)
        assert down.returncode == 1 and "error: history.url: cannot connect to the PostgreSQL server at 127.0.0.1" in down.stderr, down.stderr
        assert PASSWORD not in down.stderr


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "mistralvllm.history.postgres", raising=False)
    with pytest.raises(HistoryError, match=r"history.url: PostgreSQL needs the psycopg package: pip install 'mistralvllm\[postgres\]'"):
        open_history(HistorySection(url="postgresql://someone@127.0.0.1/db"))
