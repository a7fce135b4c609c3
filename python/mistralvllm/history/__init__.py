"""Chat history: every conversation, queryable afterwards.

Conversations and their messages are stored with token counts, timings,
finish reasons and an interrupted flag, in SQLite (the embedded default,
`SQLiteHistory`) or in PostgreSQL (`PostgresHistory`, shared by several
services). Both are a `HistoryStore`, with the same guarantees: each step of
a turn is one transaction, several threads and processes can write at once,
and a writer killed mid-answer leaves the question and the answer so far,
marked interrupted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conversation import Conversation, Turn
from .records import (
    TITLE_LENGTH,
    ConversationExistsError,
    ConversationNotFoundError,
    ConversationSummary,
    ExportFormat,
    HistoryDatabaseError,
    HistoryError,
    HistoryWriteError,
    SearchHit,
    StoredMessage,
    TurnIds,
)
from .sqlite import SQLiteHistory, default_history_path
from .store import HistoryStore

if TYPE_CHECKING:
    from ..config import HistorySection

__all__ = [
    "TITLE_LENGTH",
    "Conversation",
    "ConversationExistsError",
    "ConversationNotFoundError",
    "ConversationSummary",
    "ExportFormat",
    "HistoryDatabaseError",
    "HistoryError",
    "HistoryStore",
    "HistoryWriteError",
    "SQLiteHistory",
    "SearchHit",
    "StoredMessage",
    "Turn",
    "TurnIds",
    "default_history_path",
    "open_history",
]


def open_history(section: HistorySection) -> HistoryStore:
    """The history the config's ``history`` section names: PostgreSQL at
    ``url``, else SQLite at ``path``. Errors name the field."""
    try:
        if section.url is not None:
            from .postgres import PostgresHistory  # psycopg is an optional extra

            return PostgresHistory(section.url)
        return SQLiteHistory(section.path)
    except HistoryError as e:
        raise type(e)(f"history.{'url' if section.url is not None else 'path'}: {e}") from e.__cause__
