"""Fitting a conversation into the model's context window.

Oldest turns go first; the system prompt and the new message always stay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ContextOverflowError

Message = Mapping[str, Any]


def context_overflow(prompt_tokens: int, answer_tokens: int, context_length: int, *, answer_param: str = "max_tokens") -> ContextOverflowError:
    """The error for a prompt that cannot fit, carrying both numbers (the
    answer's length named as ``answer_param`` sets it)."""
    error = ContextOverflowError(
        f"the prompt has {prompt_tokens} tokens and the answer may take {answer_tokens} more ({answer_param}), "
        f"but the context window is {context_length} tokens"
    )
    error.prompt_tokens = prompt_tokens
    error.max_tokens = answer_tokens
    error.context_length = context_length
    return error


@dataclass(frozen=True)
class FittedPrompt:
    """The messages to send, how many old turns were left out, and their size."""

    messages: list[Message]
    dropped_turns: int
    prompt_tokens: int


def _split_turns(history: Sequence[Message]) -> list[list[Message]]:
    """Group messages into turns, each starting at a user message."""
    turns: list[list[Message]] = []
    for message in history:
        if message["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def fit_to_context(
    system_prompt: str | None,
    history: Sequence[Message],
    new_message: Message,
    *,
    count_tokens: Callable[[list[Message]], int],
    budget: int,
    reserve: int,
) -> FittedPrompt:
    """Keep as many of the newest turns of ``history`` as fit in ``budget``
    tokens with ``reserve`` tokens left for the answer.

    Raises `ContextOverflowError` (with ``prompt_tokens`` and
    ``context_length``) when even the system prompt and the new message alone
    do not fit.
    """
    head: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    turns = _split_turns(history)
    for dropped in range(len(turns) + 1):
        kept = [m for turn in turns[dropped:] for m in turn]
        messages = [*head, *kept, new_message]
        prompt_tokens = count_tokens(messages)
        if prompt_tokens + reserve <= budget:
            return FittedPrompt(messages, dropped, prompt_tokens)
    raise context_overflow(prompt_tokens, reserve, budget)
