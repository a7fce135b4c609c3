"""The history in PostgreSQL, shared by several services: the same tables as
SQLite's, full-text search through a tsvector column with a GIN index, and
the schema created on first connect under an advisory lock (so two services
that start together create it once)."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .location import redacted_url
from .records import HistoryDatabaseError, HistoryError, HistoryWriteError
from .sql import Row, SQLHistory

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import dict_row
except ImportError as e:
    raise HistoryError("PostgreSQL needs the psycopg package: pip install 'mistralvllm[postgres]'") from e

# 2: images (each stored once, by digest) and the messages' references to them;
# an answer's reasoning apart from its content.
SCHEMA_VERSION = 2
# pg_advisory_xact_lock's key for creating the schema: "mvhistor" in ASCII.
_SCHEMA_LOCK = 0x6D76686973746F72
# The same tables as SQLite's; ids compare byte by byte ("C"), as SQLite's do.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT COLLATE "C" PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    model TEXT,
    config_digest TEXT,
    system_prompt TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    time_to_first_token_s DOUBLE PRECISION,
    decode_tok_per_s DOUBLE PRECISION,
    finish_reason TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    dropped_turns INTEGER NOT NULL DEFAULT 0,
    content_words tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
ALTER TABLE messages ADD COLUMN IF NOT EXISTS reasoning TEXT;
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE INDEX IF NOT EXISTS messages_by_content_words ON messages USING GIN (content_words);
CREATE TABLE IF NOT EXISTS images (
    digest TEXT COLLATE "C" PRIMARY KEY,
    data BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS message_images (
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    digest TEXT COLLATE "C" NOT NULL REFERENCES images(digest),
    PRIMARY KEY (message_id, position)
);
CREATE TABLE IF NOT EXISTS history_schema (version INTEGER NOT NULL);
"""
# Words as SQLite's search takes them: lower case, no stemming ('simple').
_SEARCH = (
    "SELECT m.conversation_id, c.title, m.role, m.created,"
    " ts_headline('simple', m.content, query, 'StartSel=[, StopSel=], MaxFragments=1, MaxWords=12, MinWords=4, FragmentDelimiter=…')"
    " AS snippet FROM messages m JOIN conversations c ON c.id = m.conversation_id, websearch_to_tsquery('simple', ?) query"
    " WHERE m.content_words @@ query ORDER BY m.created DESC LIMIT ?"
)
# Connections kept open between calls; more are opened when more threads write at once.
_IDLE_CONNECTIONS = 16
_CONNECT_TIMEOUT_S = 10

Connection = psycopg.Connection[Row]


class _Statements:
    """`Statements` on a psycopg connection (``?`` placeholders become ``%s``)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        cursor = self.connection.execute(sql.replace("?", "%s"), parameters or None)
        return cursor.fetchall() if cursor.description is not None else []


class PostgresHistory(SQLHistory):
    """The history in the PostgreSQL database at ``url``
    (``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``)."""

    def __init__(self, url: str) -> None:
        self.location = redacted_url(url)
        try:
            parameters = conninfo_to_dict(url)
        except psycopg.Error:
            raise HistoryError(f"{self.location}: not a PostgreSQL URL; expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
        self._password = str(parameters.get("password") or "")
        self._server = f"{parameters.get('host') or 'localhost'}:{parameters.get('port') or 5432}"
        defaults: dict[str, str | int] = {"connect_timeout": _CONNECT_TIMEOUT_S, "application_name": "mistralvllm"}
        self._conninfo = make_conninfo(url, **{name: value for name, value in defaults.items() if name not in parameters})
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        try:
            with self._transaction() as db:
                db.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                present = db.execute("SELECT to_regclass('history_schema') IS NOT NULL AS present")[0]["present"]
                version = db.execute("SELECT max(version) AS version FROM history_schema")[0]["version"] if present else None
                if version is not None and version > SCHEMA_VERSION:
                    raise HistoryError(f"{self.location}: written by a newer mistralvllm (schema version above {SCHEMA_VERSION})")
                if version != SCHEMA_VERSION:
                    db.execute(_SCHEMA)
                    db.execute("INSERT INTO history_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        except HistoryWriteError as e:
            raise HistoryDatabaseError(f"{self.location}: cannot create the history's tables ({self._clean(str(e.__cause__))})") from e

    def _clean(self, message: str) -> str:
        """A driver's message on one line, without the password (should it quote it)."""
        message = " ".join(message.split())
        return message.replace(self._password, "***") if self._password else message

    def _connect(self) -> Connection:
        try:
            return psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
        except psycopg.Error as e:
            raise HistoryDatabaseError(
                f"cannot connect to the PostgreSQL server at {self._server} ({self.location}): {self._clean(str(e))}"
            ) from None

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A connection of the pool (one checked to be alive) or a new one; back to the pool after."""
        connection = None
        while connection is None:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                connection = self._connect()
                continue
            try:
                idle.execute("")  # a server restarted since, or a dropped link, shows here
                connection = idle
            except psycopg.Error:
                idle.close()
        try:
            yield connection
        finally:
            reusable = not connection.broken and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            with self._lock:
                if reusable and len(self._idle) < _IDLE_CONNECTIONS:
                    self._idle.append(connection)
                    connection = None
            if connection is not None:
                connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[_Statements]:
        try:
            with self._connection() as connection, connection.transaction():
                yield _Statements(connection)
        except psycopg.Error as e:
            raise HistoryWriteError(f"{self.location}: could not write to the history database ({self._clean(str(e))})") from e

    @contextmanager
    def _reading(self) -> Iterator[_Statements]:
        try:
            with self._connection() as connection:
                yield _Statements(connection)
        except psycopg.Error as e:
            raise HistoryDatabaseError(f"{self.location}: could not read the history database ({self._clean(str(e))})") from e

    def _search_rows(self, text: str, limit: int) -> builtins.list[Row]:
        # Each word a phrase of its own, as SQLite's search takes them: no
        # word is websearch syntax (or, -, quotes).
        terms = " ".join('"' + word.replace('"', " ") + '"' for word in text.split())
        return self._read(_SEARCH, (terms, limit))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
