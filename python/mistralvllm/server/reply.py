"""`Reply`: one request that passed its checks, answered whole or streamed
in its API's `Shape`, with its stored turn, metrics and log line.

It knows nothing of FastAPI: a route sends what `Reply.whole` returns, or
streams `Reply.events`.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from .._core import ChatChunk, ChatStream
from ..collect import StreamedAnswer
from ..history import HistoryError, Turn
from ..sampling import SamplingParams
from ..tools import ToolOptions
from .api_error import APIError
from .generation import ClientDisconnected, Limits, Receive, RequestTimedOut, run_choices
from .model_pool import ModelLease
from .state import ServiceState

log = logging.getLogger("mistralvllm.server")
# How often a streaming answer's text so far is written to history, so that
# a crash loses at most this much of it.
PARTIAL_SAVE_INTERVAL_S = 1.0
# The body of a whole answer: ChatCompletion, Completion, ...
W = TypeVar("W", bound=BaseModel)
W_co = TypeVar("W_co", bound=BaseModel, covariant=True)


def system_fingerprint(config_digest: str) -> str:
    """OpenAI's ``system_fingerprint``, in every reply's head: names the
    settings that shape answers (`Config.digest`), so a client sees when they
    change."""
    return f"fp_{config_digest}"


class GenerationRequest(Protocol):
    """What the serving layer reads of a validated request, whatever its API."""

    # The request fields that hold the prompt and set the answer's length, for errors.
    prompt_param: ClassVar[str]
    answer_tokens_param: ClassVar[str]

    @property
    def model(self) -> str: ...
    @property
    def stream(self) -> bool: ...
    def answer_tokens(self) -> int | None: ...
    def sampling(self) -> SamplingParams: ...
    def tool_options(self) -> ToolOptions: ...


class Choices(Protocol[W_co]):
    """How a shape writes several answers to one request (``n`` above 1):
    each a choice with its index, all in one body or one stream."""

    def whole_choices(self, head: dict[str, Any], answers: Sequence[StreamedAnswer]) -> W_co: ...
    def opening(self, head: dict[str, Any], index: int) -> list[str]: ...
    def chunk(self, head: dict[str, Any], chunk: ChatChunk, index: int) -> list[str]: ...
    def closing_choices(self, head: dict[str, Any], answers: Sequence[StreamedAnswer]) -> list[str]: ...


class Shape(Protocol[W_co]):
    """An API surface's bodies: the whole answer, or the stream texts
    (server-sent events, JSON lines) that stream it, sent as ``media_type``
    (each a list of texts, in the order sent; an empty list sends nothing). A
    shape serves one reply, so it may keep what it has sent so far.

    ``choices`` writes a request's several answers (`Choices`); None where
    the API has one answer to a request."""

    media_type: str

    @property
    def choices(self) -> Choices[W_co] | None: ...
    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> W_co: ...
    def opening(self, head: dict[str, Any]) -> list[str]: ...
    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> list[str]: ...
    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]: ...
    def failure(self, head: dict[str, Any], error: APIError) -> list[str]: ...


class Reply(Generic[W]):
    """One request that passed its checks, answered whole (`whole`) or
    streamed in its shape (`events`).

    The question is stored (as ``turn``, begun by the caller) before the
    answer starts, so a crash or a full disk shows up in history (or as a
    507) and loses nothing written. Every request ends with one log line (ok,
    length, disconnected, error or timed out) and with its answer in history
    (interrupted unless finished).

    ``more`` starts the request's other answers (``n`` above 1: only for a
    shape with `Shape.choices`), written together with the first; the first
    is the one stored.

    The reply holds ``lease`` on its model until it ends (or, never run, is
    dropped).
    """

    def __init__(
        self,
        state: ServiceState,
        lease: ModelLease,
        body: GenerationRequest,
        start: Callable[[], ChatStream],
        shape: Shape[W],
        *,
        id: str,
        turn: Turn | None = None,
        more: Sequence[Callable[[], ChatStream]] = (),
    ) -> None:
        self.state, self.lease, self.body, self.shape = state, lease, body, shape
        self.session = lease.session
        weakref.finalize(self, lease.release)
        self.starts = [start, *more]
        if more and shape.choices is None:
            raise TypeError("several answers to one request need a shape that writes them as choices")
        self.id = id
        self.head: dict[str, Any] = {
            "id": self.id,
            "created": int(time.time()),
            "model": lease.name,
            "system_fingerprint": system_fingerprint(state.config_digest),
        }
        self.started = time.monotonic()
        self.headers = {"X-Conversation-Id": turn.conversation.id} if turn else {}
        self.turn = turn
        self.answers = [StreamedAnswer() for _ in self.starts]
        self.answer = self.answers[0]
        self._saved = self.started

    @property
    def stream(self) -> bool:
        return self.body.stream

    async def whole(self, receive: Receive) -> W:
        """The whole answer; raises `ClientDisconnected` if the client
        (watched on ``receive``) leaves first."""
        limits = Limits.start(self.state.config.server.request_timeout, receive)
        status = "error"
        try:
            async for index, chunk in run_choices(self.session, self.starts, limits):
                self.answers[index].add(chunk)
            status = self._status()
        except RequestTimedOut:
            status = "timed out"
            raise self._timeout_error() from None
        except ClientDisconnected:
            status = "disconnected"
            raise
        finally:
            limits.stop()
            self._end(status)
        if (choices := self.shape.choices) is not None and len(self.answers) > 1:
            return choices.whole_choices(self.head, self.answers)
        return self.shape.whole(self.head, self.answer)

    async def events(self) -> AsyncIterator[str]:
        """The answer streamed in the shape's API (server-sent events, JSON
        lines), ending with its closing texts or its error texts."""
        # Everything is acquired inside the generator, so a response that
        # is never sent holds no engine slot and no stream. Starlette
        # cancels it when the client leaves (status "disconnected").
        limits = Limits.start(self.state.config.server.request_timeout, None)
        status, self._saved = "disconnected", time.monotonic()
        several = self.shape.choices if len(self.answers) > 1 else None
        # The first answer's text in the latest texts sent, and in those
        # before them: once a yield returns, Starlette has taken the latest
        # texts, and its http middleware sends each only after taking the
        # next, so only the ones before are surely on the client's connection.
        sent, delivered = "", ""
        try:
            opening = (
                [text for index in range(len(self.answers)) for text in several.opening(self.head, index)]
                if several
                else self.shape.opening(self.head)
            )
            if opening:
                yield "".join(opening)
            async for index, chunk in run_choices(self.session, self.starts, limits):
                self.answers[index].add(chunk)
                events = several.chunk(self.head, chunk, index) if several else self.shape.chunk(self.head, chunk)
                if events:
                    yield "".join(events)
                    delivered, sent = sent, self.answer.text
                # Saved once delivered: a kill in between leaves less
                # stored, never text the client did not get.
                if index == 0:
                    self._save_partial(chunk, delivered)
            closing = several.closing_choices(self.head, self.answers) if several else self.shape.closing(self.head, self.answer)
            status = self._status()
            yield "".join(closing)
        except APIError as e:  # the engine refused the request (e.g. a bad regex)
            status = "error"
            yield "".join(self.shape.failure(self.head, e))
        except RequestTimedOut:
            status = "timed out"
            yield "".join(self.shape.failure(self.head, self._timeout_error()))
        except Exception:
            status = "error"
            raise
        finally:
            self._end(status)

    def _status(self) -> str:
        """``ok`` or ``length`` once finished (for the log line)."""
        return "length" if self.answer.finish_reason == "length" else "ok"

    def _timeout_error(self) -> APIError:
        limit = self.state.config.server.request_timeout
        return APIError(
            504,
            f"the request took longer than this service's limit of {limit:g} s (server.request_timeout); the answer so far is stored as interrupted",
            type="timeout_error",
            code="request_timeout",
        )

    def _save_partial(self, chunk: ChatChunk, delivered: str) -> None:
        """Store the answer ``delivered`` so far every ``PARTIAL_SAVE_INTERVAL_S`` while it streams."""
        if chunk.finish_reason is not None or self.turn is None or time.monotonic() - self._saved <= PARTIAL_SAVE_INTERVAL_S:
            return
        self._saved = time.monotonic()
        try:
            self.turn.save_partial(delivered)
        except HistoryError as e:
            log.error("could not save the answer so far to %s: %s", self.id, e)

    def _end(self, status: str) -> None:
        """Store the answer (interrupted unless it finished), count it, write
        the log line, and release the model."""
        self.lease.release()
        answer = self.answer
        if self.turn is not None:
            try:
                self.turn.finish(
                    answer.as_written(),
                    reasoning=answer.reasoning,
                    usage=answer.usage,
                    finish_reason=answer.finish_reason,
                    interrupted=not answer.finished,
                )
            except HistoryError as e:
                log.error("could not store the answer to %s: %s", self.id, e)
        elapsed = time.monotonic() - self.started
        for each in self.answers:
            self.state.metrics.observe(self.lease.name, each.usage, elapsed)
        usage = answer.usage
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens} tokens, first token {usage.time_to_first_token_s:.3f}s" if usage else "no usage"
        log.info("%s %s: %s, %.3fs", self.id, status, tokens, elapsed)
