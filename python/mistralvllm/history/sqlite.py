"""The history in SQLite, the embedded default: one file (WAL mode, readable
by its owner only), FTS5 for search."""

from __future__ import annotations

import builtins
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import platformdirs

from .records import HistoryDatabaseError, HistoryError, HistoryWriteError
from .sql import Row, SQLHistory

# 2: images (each stored once, by digest) and the messages' references to them;
# an answer's reasoning apart from its content.
SCHEMA_VERSION = 2
# What brings a database of an older version to this one.
_MIGRATIONS = {1: "ALTER TABLE messages ADD COLUMN reasoning TEXT;"}
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
    dropped_turns INTEGER NOT NULL DEFAULT 0,
    reasoning TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE TABLE IF NOT EXISTS images (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS message_images (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    digest TEXT NOT NULL REFERENCES images(digest),
    PRIMARY KEY (message_id, position)
);
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


def default_history_path() -> Path:
    """``history.sqlite3`` in the user data directory."""
    return Path(platformdirs.user_data_dir("mistralvllm")) / "history.sqlite3"


class _Connection:
    """`Statements` on a sqlite3 connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in self.db.execute(sql, parameters).fetchall()]


class SQLiteHistory(SQLHistory):
    """The history database at ``path`` (default: :func:`default_history_path`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        try:
            self.path = Path(path).expanduser() if path is not None else default_history_path()
        except RuntimeError:
            raise HistoryError(f"{path}: starts with ~ but names no known user") from None
        self.location = str(self.path)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = not self.path.exists()
            with closing(self._connect()) as db:
                if created:
                    # Conversations are private. chmod, not os.open: closing any
                    # descriptor of the file would drop other connections' locks.
                    os.chmod(self.path, 0o600)
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise HistoryError(f"{self.path}: written by a newer mistralvllm (schema version above {SCHEMA_VERSION})")
                # Version 0 is a new file, which the schema makes whole.
                migrations = "".join(_MIGRATIONS[v] for v in range(version, SCHEMA_VERSION) if version and v in _MIGRATIONS)
                db.executescript(f"BEGIN IMMEDIATE; {migrations} {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
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
    def _transaction(self) -> Iterator[_Connection]:
        """One write transaction on a fresh connection (safe across threads and processes)."""
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Connection(db)
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.Error as e:
            # A full disk, a read-only file, a corrupt page: say which database.
            raise HistoryWriteError(f"{self.path}: could not write to the history database ({e})") from e

    @contextmanager
    def _reading(self) -> Iterator[_Connection]:
        try:
            with closing(self._connect()) as db:
                yield _Connection(db)
        except sqlite3.Error as e:
            raise HistoryDatabaseError(f"{self.path}: could not read the history database ({e})") from e

    def close(self) -> None:
        """Nothing to close: each call opens and closes its own connection."""

    def _search_rows(self, text: str, limit: int) -> builtins.list[Row]:
        # Each word a phrase of its own: the words' characters are never FTS5 syntax.
        terms = " ".join('"' + word.replace('"', '""') + '"' for word in text.split())
        return self._read(
            "SELECT m.conversation_id, c.title, m.role, snippet(messages_fts, 0, '[', ']', '…', 12) AS snippet, m.created"
            " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid JOIN conversations c ON c.id = m.conversation_id"
            " WHERE messages_fts MATCH ? ORDER BY m.created DESC LIMIT ?",
            (terms, limit),
        )
