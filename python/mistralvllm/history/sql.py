"""`SQLHistory`: the statements of a history in SQL, shared by the SQLite and
PostgreSQL stores. Each store gives it connections and its full-text search.

Lock order: a transaction that writes a conversation's messages updates the
conversation's row first. Writers of one conversation (from any process)
then take turns, so a turn's question and answer get consecutive ids within
the conversation, and no two transactions wait on each other in a cycle.
"""

from __future__ import annotations

import builtins
import time
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..images import image_digest
from .records import ConversationNotFoundError, ConversationSummary, SearchHit, StoredMessage, TurnIds
from .store import HistoryStore

Row = dict[str, Any]
_CONVERSATION_COLUMNS = ("id", "title", "created", "updated", "model", "config_digest", "system_prompt")
_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({', '.join(_CONVERSATION_COLUMNS)}) VALUES ({', '.join('?' for _ in _CONVERSATION_COLUMNS)})"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)
_MESSAGE_COLUMNS = (
    "role",
    "content",
    "created",
    "prompt_tokens",
    "completion_tokens",
    "time_to_first_token_s",
    "decode_tok_per_s",
    "finish_reason",
    "interrupted",
    "dropped_turns",
    "reasoning",
)
_INSERT_MESSAGE = (
    f"INSERT INTO messages (conversation_id, {', '.join(_MESSAGE_COLUMNS)}) VALUES (?, {', '.join('?' for _ in _MESSAGE_COLUMNS)}) RETURNING id"
)


class Statements(Protocol):
    """A connection in a transaction (or a read): ``?`` placeholders, rows as dicts."""

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]: ...


class SQLHistory(HistoryStore):
    """Every operation of `HistoryStore` as SQL that SQLite and PostgreSQL both run."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Statements]:
        """One write transaction; a database error in it is a `HistoryWriteError`."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Statements]:
        """A connection for reads; a database error is a `HistoryDatabaseError`."""

    @abstractmethod
    def _search_rows(self, text: str, limit: int) -> builtins.list[Row]:
        """Full-text search: rows with the fields of `SearchHit`, newest first."""

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> builtins.list[Row]:
        with self._reading() as db:
            return db.execute(sql, parameters)

    def _insert_conversation(self, conversation: ConversationSummary) -> bool:
        with self._transaction() as db:
            return bool(db.execute(_INSERT_CONVERSATION, tuple(getattr(conversation, column) for column in _CONVERSATION_COLUMNS)))

    def exists(self, conversation_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)))

    def _resolve(self, conversation_id: str) -> str:
        """The full id for an id, or a unique prefix of one (in any case)."""
        escaped = conversation_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._read(
            "SELECT id FROM conversations WHERE lower(id) LIKE lower(?) ESCAPE '\\' ORDER BY id = ? DESC, id LIMIT 2",
            (escaped + "%", conversation_id),
        )
        if not rows or not conversation_id:
            raise ConversationNotFoundError(f"no conversation {conversation_id!r} in {self.location} (see `mistralvllm history list`)")
        if len(rows) > 1 and rows[0]["id"] != conversation_id:
            raise ConversationNotFoundError(f"{conversation_id!r} matches several conversations; give more of the id")
        return str(rows[0]["id"])

    def show(self, conversation_id: str) -> ConversationSummary:
        full_id = self._resolve(conversation_id)
        found = self._summaries("WHERE c.id = ?", (full_id,))
        if not found:  # deleted since it was resolved
            raise ConversationNotFoundError(f"no conversation {conversation_id!r} in {self.location} (see `mistralvllm history list`)")
        return found[0]

    def messages(self, conversation_id: str) -> builtins.list[StoredMessage]:
        full_id = self._resolve(conversation_id)
        with self._reading() as db:
            rows = db.execute(f"SELECT id, {', '.join(_MESSAGE_COLUMNS)} FROM messages WHERE conversation_id = ? ORDER BY id", (full_id,))
            images: dict[int, builtins.list[bytes]] = {}
            for image in db.execute(
                "SELECT mi.message_id, i.data FROM message_images mi JOIN images i ON i.digest = mi.digest"
                " JOIN messages m ON m.id = mi.message_id WHERE m.conversation_id = ? ORDER BY mi.message_id, mi.position",
                (full_id,),
            ):
                images.setdefault(int(image["message_id"]), []).append(bytes(image["data"]))
        return [
            StoredMessage(
                **{key: value for key, value in row.items() if key not in ("id", "interrupted")},
                interrupted=bool(row["interrupted"]),
                images=tuple(images.get(int(row["id"]), ())),
            )
            for row in rows
        ]

    def _summaries(self, where: str = "", parameters: tuple[Any, ...] = (), limit: int | None = None) -> builtins.list[ConversationSummary]:
        rows = self._read(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count"
            f" FROM conversations c {where} ORDER BY c.updated DESC, c.id DESC" + (f" LIMIT {int(limit)}" if limit else ""),
            parameters,
        )
        return [ConversationSummary(**row) for row in rows]

    def list(self, limit: int | None = 20) -> builtins.list[ConversationSummary]:
        return self._summaries(limit=limit)

    def search(self, text: str, limit: int = 20) -> builtins.list[SearchHit]:
        if not text.split():
            return []
        return [SearchHit(**row) for row in self._search_rows(text, limit)]

    def rename(self, conversation_id: str, title: str) -> None:
        full_id = self._resolve(conversation_id)
        with self._transaction() as db:
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title[:200], full_id))

    def delete(self, conversation_id: str) -> None:
        full_id = self._resolve(conversation_id)
        with self._transaction() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (full_id,))  # its messages go with it (ON DELETE CASCADE)
            db.execute("DELETE FROM images WHERE digest NOT IN (SELECT digest FROM message_images)")

    def begin_turn(
        self, conversation_id: str, question: StoredMessage, placeholder: StoredMessage, title: str, preceding: Sequence[StoredMessage] = ()
    ) -> TurnIds:
        with self._transaction() as db:
            db.execute(
                "UPDATE conversations SET updated = ?, title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ?",
                (question.created, title, conversation_id),
            )
            for message in preceding:
                _insert_message(db, conversation_id, message)
            question_id = _insert_message(db, conversation_id, question)
            answer_id = db.execute(_INSERT_MESSAGE, _row(conversation_id, placeholder))[0]["id"]
        return TurnIds(int(question_id), int(answer_id))

    def save_partial(self, ids: TurnIds, text: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE messages SET content = ? WHERE id = ?", (text, ids.answer))

    def finish_turn(self, conversation_id: str, ids: TurnIds, question: StoredMessage, answer: StoredMessage) -> None:
        with self._transaction() as db:
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (answer.created, conversation_id))
            db.execute(
                "UPDATE messages SET content = ?, completion_tokens = ?, time_to_first_token_s = ?, decode_tok_per_s = ?,"
                " finish_reason = ?, interrupted = ?, reasoning = ? WHERE id = ?",
                (
                    answer.content,
                    answer.completion_tokens,
                    answer.time_to_first_token_s,
                    answer.decode_tok_per_s,
                    answer.finish_reason,
                    int(answer.interrupted),
                    answer.reasoning,
                    ids.answer,
                ),
            )
            db.execute("UPDATE messages SET prompt_tokens = ? WHERE id = ?", (question.prompt_tokens, ids.question))

    def set_system_prompt(self, conversation_id: str, system_prompt: str | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE conversations SET system_prompt = ?, updated = ? WHERE id = ?", (system_prompt, time.time(), conversation_id))


def _insert_message(db: Statements, conversation_id: str, message: StoredMessage) -> int:
    """Insert ``message`` and its images (each image stored once, by digest); its id."""
    message_id = int(db.execute(_INSERT_MESSAGE, _row(conversation_id, message))[0]["id"])
    for position, image in enumerate(message.images):
        digest = image_digest(image)
        db.execute("INSERT INTO images (digest, data) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING", (digest, image))
        db.execute("INSERT INTO message_images (message_id, position, digest) VALUES (?, ?, ?)", (message_id, position, digest))
    return message_id


def _row(conversation_id: str, message: StoredMessage) -> tuple[Any, ...]:
    return (
        conversation_id,
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
        message.reasoning,
    )
