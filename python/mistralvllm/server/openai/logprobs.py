"""Log-probabilities in OpenAI's two shapes: chat's list of tokens with their
bytes and top tokens, and text completions' legacy parallel lists."""

from __future__ import annotations

from collections.abc import Sequence

from ..._core import TokenLogprob, TopTokenLogprob
from .bodies import ChatLogprobs, CompletionLogprobs, TokenLogprobBody, TopLogprobBody

# What OpenAI-compatible servers (vLLM) send for a log-probability of -inf,
# which JSON cannot carry.
LOGPROB_FLOOR = -9999.0


def _logprob(value: float) -> float:
    return max(value, LOGPROB_FLOOR)


def _top(top: TopTokenLogprob) -> TopLogprobBody:
    return TopLogprobBody(token=top.token, logprob=_logprob(top.logprob), bytes=list(top.token.encode()))


def chat_logprobs(entries: Sequence[TokenLogprob]) -> ChatLogprobs:
    """Chat completions' ``logprobs``: each token, its UTF-8 bytes, and its top tokens."""
    content = [
        TokenLogprobBody(
            token=entry.token,
            logprob=_logprob(entry.logprob),
            bytes=list(entry.token.encode()),
            top_logprobs=[_top(top) for top in entry.top_logprobs],
        )
        for entry in entries
    ]
    return ChatLogprobs(content=content, refusal=None)


class CompletionLogprobWriter:
    """Text completions' ``logprobs``, chunk after chunk: the text offsets
    continue from ``offset`` (the prompt's length: OpenAI's offsets run over
    prompt and answer)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def write(self, entries: Sequence[TokenLogprob]) -> CompletionLogprobs:
        offsets = []
        for entry in entries:
            offsets.append(self.offset)
            self.offset += len(entry.token)
        return CompletionLogprobs(
            tokens=[entry.token for entry in entries],
            token_logprobs=[_logprob(entry.logprob) for entry in entries],
            top_logprobs=[{top.token: _logprob(top.logprob) for top in entry.top_logprobs} for entry in entries],
            text_offset=offsets,
        )
