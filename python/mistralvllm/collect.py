"""Reading a stream of chunks into one answer: its text, the tools it called,
why it stopped and the request's usage.

`StreamedAnswer` is filled chunk by chunk, so the streaming paths (the
terminal chat, the service's server-sent events) show each chunk as it comes
and still end with the whole answer; `collect` reads a stream to its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._core import ChatChunk, ChatStream, TokenLogprob, ToolCall, Usage
from .errors import RequestError
from .tools import calls_as_text, tool_call_body


@dataclass(frozen=True)
class ChatResult:
    """A complete answer: its text, why it stopped, the request's usage, the
    tools the model called (finish_reason ``"tool_calls"``), each token's
    log-probability when asked for (``logprobs=True``), a thinking model's
    reasoning (what its template's think tags enclose, kept out of ``text``),
    and the other answers of a request for several (``n``): ``choices``
    lists all of them."""

    text: str
    finish_reason: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    others: tuple[ChatResult, ...] = ()
    reasoning: str = ""

    @property
    def choices(self) -> tuple[ChatResult, ...]:
        """This answer and the request's others, in order (``n`` in all)."""
        return (self, *self.others)


@dataclass
class StreamedAnswer:
    """What a stream produced so far; ``finish_reason``, ``usage`` and
    ``stop_sequence`` (the request's stop string it ended on, if any) are set
    by its last chunk (still ``None`` if the stream ended early)."""

    parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    stop_sequence: str | None = None

    def add(self, chunk: ChatChunk) -> ChatChunk:
        """Take in one chunk, and give it back for the caller to show."""
        self.parts.append(chunk.text)
        self.reasoning_parts.append(chunk.reasoning)
        self.tool_calls.extend(chunk.tool_calls)
        self.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish_reason, self.usage, self.stop_sequence = chunk.finish_reason, chunk.usage, chunk.stop_sequence
        return chunk

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def as_written(self) -> str:
        """The answer as the model wrote it: the text, or its tool calls as JSON."""
        if self.tool_calls:
            return calls_as_text([tool_call_body(call) for call in self.tool_calls])
        return self.text

    def result(self) -> ChatResult:
        """The finished answer; a stream that ended without a finish reason or
        usage is the engine's error."""
        if self.finish_reason is None:
            raise RequestError("the answer ended without a finish reason")
        if self.usage is None:
            raise RequestError("the engine finished the answer without reporting usage")
        return ChatResult(self.text, self.finish_reason, self.usage, tuple(self.tool_calls), tuple(self.logprobs), reasoning=self.reasoning)


def collect(stream: ChatStream) -> ChatResult:
    """Read ``stream`` up to its last chunk into a `ChatResult`, and close it."""
    answer = StreamedAnswer()
    try:
        for chunk in stream:
            if answer.add(chunk).finish_reason is not None:
                break
        return answer.result()
    finally:
        stream.close()
