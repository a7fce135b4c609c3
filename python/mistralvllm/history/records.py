"""What a history stores and answers, whatever the database: messages,
conversation summaries, search hits, and the errors."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..context_window import Message
from ..errors import MistralVllmError
from ..images import image_part

TITLE_LENGTH = 60
# What `HistoryStore.export` writes.
ExportFormat = Literal["json", "markdown"]
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class HistoryError(MistralVllmError):
    """A conversation could not be found, or the history database is unusable."""


class ConversationNotFoundError(HistoryError):
    """No conversation has the id (or id prefix), or several do."""


class ConversationExistsError(HistoryError):
    """A new conversation was given an id that another conversation has."""


class HistoryDatabaseError(HistoryError):
    """The history database could not be reached or read (a PostgreSQL server
    that is down, a corrupt file)."""


class HistoryWriteError(HistoryDatabaseError):
    """A write to the history database failed (full disk, read-only file, ...)."""


def new_conversation_id() -> str:
    """Time-ordered, short and unique: milliseconds in hex plus random bits."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(3)}"


def check_conversation_id(conversation_id: str) -> str:
    """``conversation_id`` when it is one a client may choose."""
    if not _CLIENT_ID.match(conversation_id):
        raise HistoryError(f"conversation id {conversation_id!r}: expected 1-64 letters, digits, '-' or '_'")
    return conversation_id


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
    # The message's images, encoded (stored once each, by digest).
    images: tuple[bytes, ...] = ()
    # A thinking model's reasoning before its answer: kept, never sent back.
    reasoning: str | None = None

    def as_request(self) -> Message:
        """The message as a request sends it: its images before its text
        (an answer's reasoning stays out, as thinking models' templates leave it)."""
        if not self.images:
            return {"role": self.role, "content": self.content}
        return {"role": self.role, "content": [*(image_part(image) for image in self.images), {"type": "text", "text": self.content}]}


class TurnIds(NamedTuple):
    """The stored ids of a turn's question and answer."""

    question: int
    answer: int


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
