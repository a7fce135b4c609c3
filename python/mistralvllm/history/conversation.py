"""`Conversation` and `Turn`: a conversation being continued, whatever
database stores it (or none: kept in memory only)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .._core import Usage
from ..context_window import FittedPrompt, Message, fit_to_context
from .records import TITLE_LENGTH, StoredMessage, TurnIds

if TYPE_CHECKING:
    from .store import HistoryStore


@dataclass
class Conversation:
    """A conversation being continued: builds requests and records turns
    (kept in memory only when ``history`` is None)."""

    history: HistoryStore | None
    id: str
    system_prompt: str | None
    messages: list[StoredMessage] = field(default_factory=list)

    def fit(
        self, user_text: str, *, images: Sequence[bytes] = (), count_tokens: Callable[[list[Message]], int], budget: int, reserve: int
    ) -> FittedPrompt:
        """The messages for the next request (the question with its
        ``images``), oldest turns left out as needed."""
        return fit_to_context(
            self.system_prompt,
            [m.as_request() for m in self.messages],
            StoredMessage("user", user_text, 0.0, images=tuple(images)).as_request(),
            count_tokens=count_tokens,
            budget=budget,
            reserve=reserve,
        )

    def begin_turn(
        self,
        user_text: str,
        *,
        images: Sequence[bytes] = (),
        dropped_turns: int = 0,
        role: str = "user",
        preceding: Sequence[StoredMessage] = (),
    ) -> Turn:
        """Store the question (with its ``images``) and an empty answer marked
        interrupted, so a process killed mid-answer still leaves the turn (see
        :class:`Turn`). The question may come from another ``role`` (a tool's
        result), after ``preceding`` messages stored with it (an API request's
        other messages)."""
        now = time.time()
        question = StoredMessage(role, user_text, now, dropped_turns=dropped_turns, images=tuple(images))
        ids = None
        if self.history is not None:
            placeholder = StoredMessage("assistant", "", now, interrupted=True)
            ids = self.history.begin_turn(self.id, question, placeholder, " ".join(user_text.split())[:TITLE_LENGTH], preceding)
        self.messages += preceding
        return Turn(self, question, ids)

    def record_turn(
        self,
        user_text: str,
        answer: str,
        *,
        reasoning: str | None = None,
        usage: Usage | None = None,
        finish_reason: str | None = None,
        interrupted: bool = False,
        dropped_turns: int = 0,
    ) -> None:
        """Store a question and its whole (or partial) answer."""
        self.begin_turn(user_text, dropped_turns=dropped_turns).finish(
            answer, reasoning=reasoning, usage=usage, finish_reason=finish_reason, interrupted=interrupted
        )

    def set_system_prompt(self, system_prompt: str | None) -> None:
        if self.history is not None:
            self.history.set_system_prompt(self.id, system_prompt)
        self.system_prompt = system_prompt


@dataclass
class Turn:
    """A stored question whose answer is being written: ``save_partial`` keeps
    the text so far, ``finish`` stores the answer and clears the interrupted
    flag unless it was interrupted. Both go to the conversation in memory too."""

    conversation: Conversation
    question: StoredMessage
    ids: TurnIds | None  # None when the conversation is not stored

    def save_partial(self, text: str) -> None:
        if self.ids is not None and self.conversation.history is not None:
            self.conversation.history.save_partial(self.ids, text)

    def finish(
        self,
        answer: str,
        *,
        reasoning: str | None = None,
        usage: Usage | None = None,
        finish_reason: str | None = None,
        interrupted: bool = False,
    ) -> None:
        """Store the answer (with a thinking model's ``reasoning``, kept apart)."""
        question = replace(self.question, prompt_tokens=usage.prompt_tokens if usage else None)
        reply = StoredMessage(
            "assistant",
            answer,
            time.time(),
            completion_tokens=usage.completion_tokens if usage else None,
            time_to_first_token_s=usage.time_to_first_token_s if usage else None,
            decode_tok_per_s=usage.decode_tok_per_s if usage else None,
            finish_reason=finish_reason,
            interrupted=interrupted,
            reasoning=reasoning or None,
        )
        history = self.conversation.history
        if self.ids is not None and history is not None:
            history.finish_turn(self.conversation.id, self.ids, question, reply)
        self.conversation.messages += [question, reply]
