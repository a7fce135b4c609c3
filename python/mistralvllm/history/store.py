"""`HistoryStore`: what the chat, the service and the `history` commands use
of a history, whatever database holds it."""

from __future__ import annotations

import builtins
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict

from ..images import data_url, image_digest
from .conversation import Conversation
from .records import (
    ConversationExistsError,
    ConversationSummary,
    ExportFormat,
    HistoryError,
    HistoryWriteError,
    SearchHit,
    StoredMessage,
    TurnIds,
    check_conversation_id,
    new_conversation_id,
)

# A generated id that another conversation took in the same millisecond is drawn again.
_NEW_ID_ATTEMPTS = 3


class HistoryStore(ABC):
    """Conversations and their turns in one database.

    Every method is one transaction (or one read), safe from several threads
    and processes at once. A turn is stored when it begins (the question, and
    an empty answer flagged interrupted) and completed when the answer ends:
    a writer killed mid-answer leaves the question and the answer so far,
    marked interrupted. Within a conversation, turns are stored in the order
    they began, each question right before its answer.
    """

    # Where the history is, for messages: a path, or a URL without its password.
    location: str

    def new(
        self,
        *,
        model: str | None = None,
        config_digest: str | None = None,
        system_prompt: str | None = None,
        title: str = "",
        conversation_id: str | None = None,
    ) -> Conversation:
        """Start a conversation (with a given id, e.g. one a client chose;
        `ConversationExistsError` when it is taken)."""
        chosen = check_conversation_id(conversation_id) if conversation_id is not None else None
        for _ in range(_NEW_ID_ATTEMPTS):
            now = time.time()
            conversation = ConversationSummary(chosen or new_conversation_id(), title, now, now, model, config_digest, system_prompt, 0)
            if self._insert_conversation(conversation):
                return Conversation(self, conversation.id, system_prompt)
            if chosen is not None:
                raise ConversationExistsError(f"conversation {chosen!r} exists already in {self.location}")
        raise HistoryWriteError(f"{self.location}: every new conversation id was taken ({_NEW_ID_ATTEMPTS} attempts)")

    @abstractmethod
    def _insert_conversation(self, conversation: ConversationSummary) -> bool:
        """Store a new conversation (with no messages) unless its id is taken; whether it was stored."""

    @abstractmethod
    def exists(self, conversation_id: str) -> bool:
        """Whether a conversation has exactly this id."""

    @abstractmethod
    def show(self, conversation_id: str) -> ConversationSummary:
        """The conversation with this id, or the one id that starts with it."""

    @abstractmethod
    def messages(self, conversation_id: str) -> list[StoredMessage]:
        """A conversation's messages, oldest first."""

    @abstractmethod
    def list(self, limit: int | None = 20) -> list[ConversationSummary]:
        """The most recently updated conversations first."""

    @abstractmethod
    def search(self, text: str, limit: int = 20) -> builtins.list[SearchHit]:
        """Messages containing all the words of ``text`` (full-text search), newest first."""

    @abstractmethod
    def rename(self, conversation_id: str, title: str) -> None: ...

    @abstractmethod
    def delete(self, conversation_id: str) -> None: ...

    @abstractmethod
    def begin_turn(
        self, conversation_id: str, question: StoredMessage, placeholder: StoredMessage, title: str, preceding: Sequence[StoredMessage] = ()
    ) -> TurnIds:
        """Store ``preceding`` messages, then a question and its placeholder
        answer (and ``title`` if the conversation has none), in one transaction."""

    @abstractmethod
    def save_partial(self, ids: TurnIds, text: str) -> None:
        """Replace the answer's text so far."""

    @abstractmethod
    def finish_turn(self, conversation_id: str, ids: TurnIds, question: StoredMessage, answer: StoredMessage) -> None:
        """Store the whole answer and the question's prompt tokens in one transaction."""

    @abstractmethod
    def set_system_prompt(self, conversation_id: str, system_prompt: str | None) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Close the connections kept open between calls."""

    def resume(self, conversation_id: str) -> Conversation:
        """Continue a stored conversation (an id prefix is enough)."""
        summary = self.show(conversation_id)
        return Conversation(self, summary.id, summary.system_prompt, self.messages(summary.id))

    def export(self, conversation_id: str, format: ExportFormat = "json") -> str:
        """The whole conversation as JSON or Markdown."""
        summary = self.show(conversation_id)
        messages = self.messages(summary.id)
        if format == "json":
            exported = [{**asdict(m), "images": [{"sha256": image_digest(i), "data_url": data_url(i)} for i in m.images]} for m in messages]
            return json.dumps({**asdict(summary), "messages": exported}, indent=2, ensure_ascii=False)
        if format != "markdown":
            raise HistoryError(f"export format {format!r} is not one of json, markdown")
        lines = [f"# {summary.title or summary.id}", "", f"- id: `{summary.id}`", f"- model: {summary.model or '-'}"]
        lines.append(f"- created: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(summary.created))}")
        if summary.system_prompt:
            lines += ["", f"**system**: {summary.system_prompt}"]
        for message in messages:
            note = " *(interrupted)*" if message.interrupted else ""
            thinking = [f"> *thinking:* {line}" for line in message.reasoning.splitlines()] + [""] if message.reasoning else []
            images = [f"*(image sha256:{image_digest(i)[:16]})*" for i in message.images]
            lines += ["", f"**{message.role}**{note}:", "", *thinking, *images, message.content]
        return "\n".join(lines) + "\n"
