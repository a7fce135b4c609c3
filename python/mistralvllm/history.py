"""Chat history in SQLite: every conversation, queryable afterwards.

One database (WAL mode) holds conversations and their messages with token
counts, timings, finish reasons and an interrupted flag. A turn is stored
when it begins (the question, and an empty answer flagged interrupted) and
completed when the answer ends, each step one transaction: several threads
and processes can write at once, and a writer killed mid-answer leaves the
question and the answer so far, marked interrupted.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs

from ._core import Usage
from .context_window import FittedPrompt, Message, fit_to_context
from .errors import MistralVllmError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT,
    config_digest TEXT,
    system_prompt TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content TEXT NOT NULL,
    created REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    time_to_first_token_s REAL,
    decode_tok_per_s REAL,
    finish_reason TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    dropped_turns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5 (content, content='messages', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
"""
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, role, content, created, prompt_tokens, completion_tokens,"
    " time_to_first_token_s, decode_tok_per_s, finish_reason, interrupted, dropped_turns)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
TITLE_LENGTH = 60
# What `ChatHistory.export` writes.
ExportFormat = Literal["json", "markdown"]
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class HistoryError(MistralVllmError):
    """A conversation could not be found, or the history database is unusable."""


class HistoryWriteError(HistoryError):
    """A write to the history database failed (full disk, read-only file, ...)."""


def default_history_path() -> Path:
    """``history.sqlite3`` in the user data directory."""
    return Path(platformdirs.user_data_dir("mistralvllm")) / "history.sqlite3"


def _new_id() -> str:
    """Time-ordered, short and unique: milliseconds in hex plus random bits."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(3)}"


@dataclass(frozen=True)
class StoredMessage:
    """One message as stored, with what the engine reported for answers."""

    role: str
    content: str
    created: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_s: float | None = None
    decode_tok_per_s: float | None = None
    finish_reason: str | None = None
    interrupted: bool = False
    dropped_turns: int = 0

    def as_request(self) -> Message:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    created: float
    updated: float
    model: str | None
    config_digest: str | None
    system_prompt: str | None
    message_count: int


@dataclass(frozen=True)
class SearchHit:
    conversation_id: str
    title: str
    role: str
    snippet: str
    created: float


@dataclass
class Conversation:
    """A conversation being continued: builds requests and records turns
    (kept in memory only when ``history`` is None)."""

    history: ChatHistory | None
    id: str
    system_prompt: str | None
    messages: list[StoredMessage] = field(default_factory=list)

    def fit(self, user_text: str, *, count_tokens: Callable[[list[Message]], int], budget: int, reserve: int) -> FittedPrompt:
        """The messages for the next request, oldest turns left out as needed."""
        return fit_to_context(
            self.system_prompt,
            [m.as_request() for m in self.messages],
            {"role": "user", "content": user_text},
            count_tokens=count_tokens,
            budget=budget,
            reserve=reserve,
        )

    def begin_turn(self, user_text: str, *, dropped_turns: int = 0, role: str = "user", preceding: Sequence[StoredMessage] = ()) -> Turn:
        """Store the question and an empty answer marked interrupted, so a
        process killed mid-answer still leaves the turn (see :class:`Turn`).
        The question may come from another ``role`` (a tool's result), after
        ``preceding`` messages stored with it (an API request's other messages)."""
        now = time.time()
        question = StoredMessage(role, user_text, now, dropped_turns=dropped_turns)
        rows = None
        if self.history is not None:
            placeholder = StoredMessage("assistant", "", now, interrupted=True)
            with self.history._transaction() as db:
                db.executemany(_INSERT_MESSAGE, [self._row(message) for message in preceding])
                question_row = db.execute(_INSERT_MESSAGE, self._row(question)).lastrowid
                answer_row = db.execute(_INSERT_MESSAGE, self._row(placeholder)).lastrowid
                assert question_row is not None and answer_row is not None  # set by every INSERT
                rows = (question_row, answer_row)
                db.execute(
                    "UPDATE conversations SET updated = ?, title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ?",
                    (now, " ".join(user_text.split())[:TITLE_LENGTH], self.id),
                )
        self.messages += preceding
        return Turn(self, question, rows)

    def record_turn(
        self,
        user_text: str,
        answer: str,
        *,
        usage: Usage | None = None,
        finish_reason: str | None = None,
        interrupted: bool = False,
        dropped_turns: int = 0,
    ) -> None:
        """Store a question and its whole (or partial) answer."""
        self.begin_turn(user_text, dropped_turns=dropped_turns).finish(answer, usage=usage, finish_reason=finish_reason, interrupted=interrupted)

    def _row(self, message: StoredMessage) -> tuple[Any, ...]:
        return (
            self.id,
            message.role,
            message.content,
            message.created,
            message.prompt_tokens,
            message.completion_tokens,
            message.time_to_first_token_s,
            message.decode_tok_per_s,
            message.finish_reason,
            int(message.interrupted),
            message.dropped_turns,
        )

    def set_system_prompt(self, system_prompt: str | None) -> None:
        if self.history is not None:
            with self.history._transaction() as db:
                db.execute("UPDATE conversations SET system_prompt = ?, updated = ? WHERE id = ?", (system_prompt, time.time(), self.id))
        self.system_prompt = system_prompt


@dataclass
class Turn:
    """A stored question whose answer is being written: ``save_partial`` keeps
    the text so far, ``finish`` stores the answer and clears the interrupted
    flag unless it was interrupted. Both go to the conversation in memory too."""

    conversation: Conversation
    question: StoredMessage
    rows: tuple[int, int] | None  # (question, answer) message ids when stored

    def save_partial(self, text: str) -> None:
        if self.rows is not None and self.conversation.history is not None:
            with self.conversation.history._transaction() as db:
                db.execute("UPDATE messages SET content = ? WHERE id = ?", (text, self.rows[1]))

    def finish(self, answer: str, *, usage: Usage | None = None, finish_reason: str | None = None, interrupted: bool = False) -> None:
        now = time.time()
        question = replace(self.question, prompt_tokens=usage.prompt_tokens if usage else None)
        reply = StoredMessage(
            "assistant",
            answer,
            now,
            completion_tokens=usage.completion_tokens if usage else None,
            time_to_first_token_s=usage.time_to_first_token_s if usage else None,
            decode_tok_per_s=usage.decode_tok_per_s if usage else None,
            finish_reason=finish_reason,
            interrupted=interrupted,
        )
        history = self.conversation.history
        if self.rows is not None and history is not None:
            question_row, answer_row = self.rows
            with history._transaction() as db:
                db.execute(
                    "UPDATE messages SET content = ?, completion_tokens = ?, time_to_first_token_s = ?, decode_tok_per_s = ?,"
                    " finish_reason = ?, interrupted = ? WHERE id = ?",
                    (
                        reply.content,
                        reply.completion_tokens,
                        reply.time_to_first_token_s,
                        reply.decode_tok_per_s,
                        reply.finish_reason,
                        int(reply.interrupted),
                        answer_row,
                    ),
                )
                db.execute("UPDATE messages SET prompt_tokens = ? WHERE id = ?", (question.prompt_tokens, question_row))
                db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, self.conversation.id))
        self.conversation.messages += [question, reply]


class ChatHistory:
    """The history database at ``path`` (default: :func:`default_history_path`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        try:
            self.path = Path(path).expanduser() if path is not None else default_history_path()
        except RuntimeError:
            raise HistoryError(f"{path}: starts with ~ but names no known user") from None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = not self.path.exists()
            with closing(self._connect()) as db:
                if created:
                    # Conversations are private. chmod, not os.open: closing any
                    # descriptor of the file would drop other connections' locks.
                    os.chmod(self.path, 0o600)
                if db.execute("PRAGMA user_version").fetchone()[0] > SCHEMA_VERSION:
                    raise HistoryError(f"{self.path}: written by a newer mistralvllm (schema version above {SCHEMA_VERSION})")
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except (OSError, sqlite3.Error) as e:
            raise HistoryError(f"{self.path}: cannot open the history database ({e})") from e

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on a fresh connection (safe across threads and processes)."""
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.Error as e:
            # A full disk, a read-only file, a corrupt page: say which database.
            raise HistoryWriteError(f"{self.path}: could not write to the history database ({e})") from e

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with closing(self._connect()) as db:
            return db.execute(sql, parameters).fetchall()

    def new(
        self,
        *,
        model: str | None = None,
        config_digest: str | None = None,
        system_prompt: str | None = None,
        title: str = "",
        conversation_id: str | None = None,
    ) -> Conversation:
        """Start a conversation (with a given id, e.g. one a client chose)."""
        if conversation_id is not None and not _CLIENT_ID.match(conversation_id):
            raise HistoryError(f"conversation id {conversation_id!r}: expected 1-64 letters, digits, '-' or '_'")
        conversation_id = conversation_id or _new_id()
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO conversations (id, title, created, updated, model, config_digest, system_prompt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, title, now, now, model, config_digest, system_prompt),
            )
        return Conversation(self, conversation_id, system_prompt)

    def _resolve(self, conversation_id: str) -> str:
        """The full id for an id or a unique prefix of one."""
        escaped = conversation_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._read("SELECT id FROM conversations WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 2", (escaped + "%",))
        if not rows or not conversation_id:
            raise HistoryError(f"no conversation {conversation_id!r} in {self.path} (see `mistralvllm history list`)")
        if len(rows) > 1:
            raise HistoryError(f"{conversation_id!r} matches several conversations; give more of the id")
        return str(rows[0]["id"])

    def _messages(self, conversation_id: str) -> list[StoredMessage]:
        rows = self._read(
            "SELECT role, content, created, prompt_tokens, completion_tokens, time_to_first_token_s, decode_tok_per_s,"
            " finish_reason, interrupted, dropped_turns FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        return [StoredMessage(**{**dict(row), "interrupted": bool(row["interrupted"])}) for row in rows]

    def resume(self, conversation_id: str) -> Conversation:
        """Continue a stored conversation (an id prefix is enough)."""
        summary = self.show(conversation_id)
        return Conversation(self, summary.id, summary.system_prompt, self._messages(summary.id))

    def show(self, conversation_id: str) -> ConversationSummary:
        full_id = self._resolve(conversation_id)
        return self._summaries("WHERE c.id = ?", (full_id,))[0]

    def messages(self, conversation_id: str) -> list[StoredMessage]:
        return self._messages(self._resolve(conversation_id))

    def _summaries(self, where: str = "", parameters: tuple[Any, ...] = (), limit: int | None = None) -> list[ConversationSummary]:
        rows = self._read(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count"
            f" FROM conversations c {where} ORDER BY c.updated DESC, c.id DESC" + (f" LIMIT {int(limit)}" if limit else ""),
            parameters,
        )
        return [ConversationSummary(**dict(row)) for row in rows]

    def list(self, limit: int | None = 20) -> list[ConversationSummary]:
        """The most recently updated conversations first."""
        return self._summaries(limit=limit)

    def search(self, text: str, limit: int = 20) -> builtins.list[SearchHit]:
        """Messages matching all the words of ``text`` (full-text search)."""
        terms = " ".join('"' + word.replace('"', '""') + '"' for word in text.split())
        if not terms:
            return []
        rows = self._read(
            "SELECT m.conversation_id, c.title, m.role, snippet(messages_fts, 0, '[', ']', '…', 12) AS snippet, m.created"
            " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid JOIN conversations c ON c.id = m.conversation_id"
            " WHERE messages_fts MATCH ? ORDER BY m.created DESC LIMIT ?",
            (terms, limit),
        )
        return [SearchHit(**dict(row)) for row in rows]

    def export(self, conversation_id: str, format: ExportFormat = "json") -> str:
        """The whole conversation as JSON or Markdown."""
        summary = self.show(conversation_id)
        messages = self._messages(summary.id)
        if format == "json":
            return json.dumps({**asdict(summary), "messages": [asdict(m) for m in messages]}, indent=2, ensure_ascii=False)
        if format != "markdown":
            raise HistoryError(f"export format {format!r} is not one of json, markdown")
        lines = [f"# {summary.title or summary.id}", "", f"- id: `{summary.id}`", f"- model: {summary.model or '-'}"]
        lines.append(f"- created: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(summary.created))}")
        if summary.system_prompt:
            lines += ["", f"**system**: {summary.system_prompt}"]
        for message in messages:
            note = " *(interrupted)*" if message.interrupted else ""
            lines += ["", f"**{message.role}**{note}:", "", message.content]
        return "\n".join(lines) + "\n"

    def exists(self, conversation_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)))

    def rename(self, conversation_id: str, title: str) -> None:
        full_id = self._resolve(conversation_id)
        with self._transaction() as db:
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title[:200], full_id))

    def delete(self, conversation_id: str) -> None:
        full_id = self._resolve(conversation_id)
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (full_id,))
            db.execute("DELETE FROM conversations WHERE id = ?", (full_id,))
