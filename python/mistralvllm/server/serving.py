"""The serving layer: a validated OpenAI request in, a `Session` call, and an
OpenAI response or server-sent events out, with the request's stored turn,
metrics and log line.

It knows nothing of FastAPI: a route hands it the body (and the conversation
id, and the client's receive channel) and sends back what it returns.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from .._core import ChatChunk, ChatStream, Usage
from ..collect import StreamedAnswer
from ..errors import ContextOverflowError, RequestError
from ..history import Conversation, HistoryError, HistoryWriteError, Turn
from ..session import Session
from ..tools import tool_call_body
from .api_error import APIError
from .generation import ClientDisconnected, Limits, Receive, RequestTimedOut, run_generation
from .openai_requests import ChatCompletionRequest, CompletionRequest, SamplingRequest
from .openai_responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Completion,
    CompletionChoice,
    Delta,
    ToolCallBody,
    ToolCallDelta,
    UsageBody,
)
from .state import ServiceState

log = logging.getLogger("mistralvllm.server")
# How often a streaming answer's text so far is written to history, so that
# a crash loses at most this much of it.
PARTIAL_SAVE_INTERVAL_S = 1.0
# OpenAI's max_tokens for a text completion that sets none (and no config default).
COMPLETION_MAX_TOKENS = 16
T = TypeVar("T")
# The body of a whole answer: ChatCompletion or Completion.
W = TypeVar("W", bound=BaseModel)
W_co = TypeVar("W_co", bound=BaseModel, covariant=True)


def fit_default_max_tokens(check: Callable[[dict[str, Any]], T], options: dict[str, Any], *, asked: bool) -> T:
    """``check(options)``; where the prompt leaves less room than a max_tokens
    the client did not ask for (a config default, ``asked`` false), lower it to
    that room, as vLLM does for an unset max_tokens."""
    try:
        return check(options)
    except ContextOverflowError as e:
        room = getattr(e, "context_length", 0) - getattr(e, "prompt_tokens", 0)
        if asked or room < 1:
            raise
        options["max_tokens"] = room
        return check(options)


def engine_errors(call: Callable[[], T]) -> T:
    """Run ``call``, answering the session's request errors in OpenAI's shape."""
    try:
        return call()
    except ContextOverflowError as e:
        raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None
    except RequestError as e:
        raise APIError(400, str(e)) from None


def history_writes(call: Callable[[], T]) -> T:
    """Run ``call``, answering a history write that failed (e.g. a full disk) with 507."""
    try:
        return call()
    except HistoryWriteError as e:
        log.error("history write failed: %s", e)
        raise APIError(507, str(e), type="server_error", code="history_write_failed") from None


def check_model_name(state: ServiceState, name: str) -> None:
    """404 naming the served model unless ``name`` is it."""
    if name != state.model_id:
        raise APIError(404, f"model {name!r} does not exist; this service serves {state.model_id!r}", param="model", code="model_not_found")


def check_model(state: ServiceState, body: SamplingRequest) -> Session:
    """The session, once the request names its model and stays within the service's limits."""
    session = state.ready_session()
    check_model_name(state, body.model)
    limit = state.config.server.max_tokens_limit
    if limit is not None and (body.answer_tokens() or 0) > limit:
        raise APIError(400, f"max_tokens {body.answer_tokens()} is above this service's limit of {limit}", param="max_tokens")
    return session


def request_options(state: ServiceState, body: SamplingRequest, *, unlimited: bool = False) -> dict[str, Any]:
    """The request's sampling options over the config's ``sampling``
    defaults, which apply to every field a request leaves out (as vLLM's
    generation config and llama-server's n_predict do). ``unlimited``: the
    client asked for no answer limit (Ollama's ``num_predict: -1``), so the
    default max_tokens gives way to ``server.max_tokens_limit``, if any, and
    otherwise the answer may fill the context window."""
    defaults = state.config.sampling.options()
    if unlimited:
        defaults["max_tokens"] = state.config.server.max_tokens_limit
    return {**defaults, **body.sampling()}


def find_conversation(state: ServiceState, conversation_id: str | None, body: ChatCompletionRequest, session: Session) -> Conversation | None:
    """The stored conversation a request belongs to (``X-Conversation-Id`` or ``user``)."""
    conversation_id = conversation_id or body.user
    history = state.history
    if not conversation_id or history is None:
        return None
    system = next((m.text() for m in body.messages if m.role == "system"), None)
    try:
        if history.exists(conversation_id):
            conversation = history.resume(conversation_id)
            if system is not None and system != conversation.system_prompt:
                history_writes(lambda: conversation.set_system_prompt(system))
            return conversation
        return history_writes(
            lambda: history.new(
                model=session.info()["model"], config_digest=state.config.digest(), system_prompt=system, conversation_id=conversation_id
            )
        )
    except HistoryError as e:
        raise APIError(400, str(e), param="X-Conversation-Id") from None


def usage_body(usage: Usage | None) -> UsageBody | None:
    if usage is None:
        return None
    return UsageBody(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens)


@dataclass(frozen=True)
class StreamFormat:
    """How an API sends a streamed answer: its media type, what goes around
    each body, what ends the stream, and the body of an error met on the way."""

    media_type: str
    before: str
    after: str
    end: str
    error: Callable[[APIError], dict[str, Any]]

    def frame(self, body: BaseModel | dict[str, Any]) -> str:
        """One body on the wire; a response body sends the fields it was built with."""
        data = body.model_dump(exclude_unset=True) if isinstance(body, BaseModel) else body
        return f"{self.before}{json.dumps(data)}{self.after}"


SERVER_SENT_EVENTS = StreamFormat("text/event-stream", "data: ", "\n\n", "data: [DONE]\n\n", APIError.body)


class Shape(Protocol[W_co]):
    """An API surface's bodies: the whole answer, or the ones that stream it
    (an opening, one per chunk unless ``chunk`` has nothing to send, and a closing)."""

    id_prefix: str
    stream_format: StreamFormat

    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> W_co: ...
    def opening(self, head: dict[str, Any]) -> BaseModel | None: ...
    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> BaseModel | None: ...
    def closing(self, head: dict[str, Any], answer: StreamedAnswer, body: SamplingRequest) -> BaseModel | None: ...


def requested_usage(answer: StreamedAnswer, body: SamplingRequest) -> Usage | None:
    """The usage to send after a streamed OpenAI answer, if the request asked
    for it (``stream_options.include_usage``)."""
    wanted = body.stream_options is not None and body.stream_options.include_usage
    return answer.usage if wanted else None


class ChatShape:
    """Chat completions' bodies: a message when whole; when streamed, a first
    delta that names the role, then a delta per chunk."""

    id_prefix = "chatcmpl"
    stream_format = SERVER_SENT_EVENTS

    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> ChatCompletion:
        calls = answer.tool_calls
        message = AssistantMessage(role="assistant", content=answer.text if answer.text or not calls else None)
        if calls:
            message.tool_calls = [ToolCallBody.model_validate(tool_call_body(call)) for call in calls]
        choice = ChatChoice(index=0, message=message, finish_reason=answer.finish_reason, logprobs=None)
        return ChatCompletion(**head, object="chat.completion", choices=[choice], usage=usage_body(answer.usage))

    def opening(self, head: dict[str, Any]) -> ChatCompletionChunk | None:
        choice = ChunkChoice(index=0, delta=Delta(role="assistant", content=""), finish_reason=None)
        return ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[choice])

    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> ChatCompletionChunk:
        delta = Delta(content=chunk.text) if chunk.text else Delta()
        if chunk.tool_calls:
            delta.tool_calls = [ToolCallDelta.model_validate({"index": i, **tool_call_body(call)}) for i, call in enumerate(chunk.tool_calls)]
        choice = ChunkChoice(index=0, delta=delta, finish_reason=chunk.finish_reason)
        return ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[choice])

    def closing(self, head: dict[str, Any], answer: StreamedAnswer, body: SamplingRequest) -> ChatCompletionChunk | None:
        if (usage := requested_usage(answer, body)) is None:
            return None
        return ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[], usage=usage_body(usage))


class CompletionShape:
    """Text completions' bodies: the same object whole and per streamed chunk."""

    id_prefix = "cmpl"
    stream_format = SERVER_SENT_EVENTS

    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> Completion:
        choice = CompletionChoice(index=0, text=answer.text, finish_reason=answer.finish_reason, logprobs=None)
        return Completion(**head, object="text_completion", choices=[choice], usage=usage_body(answer.usage))

    def opening(self, head: dict[str, Any]) -> Completion | None:
        return None

    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> Completion:
        choice = CompletionChoice(index=0, text=chunk.text, finish_reason=chunk.finish_reason, logprobs=None)
        return Completion(**head, object="text_completion", choices=[choice])

    def closing(self, head: dict[str, Any], answer: StreamedAnswer, body: SamplingRequest) -> Completion | None:
        if (usage := requested_usage(answer, body)) is None:
            return None
        return Completion(**head, object="text_completion", choices=[], usage=usage_body(usage))


class Reply(Generic[W]):
    """One request that passed its checks, answered whole (`whole`) or
    streamed (`events`, in its shape's `StreamFormat`).

    The question is stored before the answer starts, so a crash or a full
    disk shows up in history (or as a 507) and loses nothing written. Every
    request ends with one log line (ok, length, disconnected, error or timed
    out) and with its answer in history (interrupted unless finished).
    """

    def __init__(
        self,
        state: ServiceState,
        session: Session,
        body: SamplingRequest,
        start: Callable[[], ChatStream],
        shape: Shape[W],
        conversation: Conversation | None = None,
    ) -> None:
        self.state, self.session, self.body, self.start, self.shape = state, session, body, start, shape
        self.id = f"{shape.id_prefix}-{uuid.uuid4().hex[:24]}"
        self.head: dict[str, Any] = {"id": self.id, "created": int(time.time()), "model": state.model_id}
        self.started = time.monotonic()
        self.headers = {"X-Conversation-Id": conversation.id} if conversation else {}
        self.turn: Turn | None = None
        if conversation is not None and isinstance(body, ChatCompletionRequest):
            question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
            self.turn = history_writes(lambda: conversation.begin_turn(question))
        self.answer = StreamedAnswer()
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
            async for chunk in run_generation(self.session, self.start, limits, engine_errors):
                self.answer.add(chunk)
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
        return self.shape.whole(self.head, self.answer)

    async def events(self) -> AsyncIterator[str]:
        """The answer as its shape streams it, ending with the stream's end or an error body."""
        # Everything is acquired inside the generator, so a response that
        # is never sent holds no engine slot and no stream. Starlette
        # cancels it when the client leaves (status "disconnected").
        limits = Limits.start(self.state.config.server.request_timeout, None)
        status, self._saved = "disconnected", time.monotonic()
        wire = self.shape.stream_format
        try:
            if (opening := self.shape.opening(self.head)) is not None:
                yield wire.frame(opening)
            async for chunk in run_generation(self.session, self.start, limits, engine_errors):
                if (body := self.shape.chunk(self.head, self.answer.add(chunk))) is not None:
                    yield wire.frame(body)
                # Saved once sent (the generator resumes after Starlette's
                # send): a kill in between leaves less stored, never text
                # the client did not get.
                self._save_partial(chunk)
            if (closing := self.shape.closing(self.head, self.answer, self.body)) is not None:
                yield wire.frame(closing)
            status = self._status()
            if wire.end:
                yield wire.end
        except APIError as e:  # the engine refused the request (e.g. a bad regex)
            status = "error"
            yield wire.frame(wire.error(e))
        except RequestTimedOut:
            status = "timed out"
            yield wire.frame(wire.error(self._timeout_error()))
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

    def _save_partial(self, chunk: ChatChunk) -> None:
        """Store the answer sent so far every ``PARTIAL_SAVE_INTERVAL_S`` while it streams."""
        if chunk.finish_reason is not None or self.turn is None or time.monotonic() - self._saved <= PARTIAL_SAVE_INTERVAL_S:
            return
        self._saved = time.monotonic()
        try:
            self.turn.save_partial(self.answer.text)
        except HistoryError as e:
            log.error("could not save the answer so far to %s: %s", self.id, e)

    def _end(self, status: str) -> None:
        """Store the answer (interrupted unless it finished), count it, and write the log line."""
        answer = self.answer
        if self.turn is not None:
            try:
                self.turn.finish(answer.as_written(), usage=answer.usage, finish_reason=answer.finish_reason, interrupted=not answer.finished)
            except HistoryError as e:
                log.error("could not store the answer to %s: %s", self.id, e)
        elapsed = time.monotonic() - self.started
        self.state.metrics.observe(answer.usage, elapsed)
        usage = answer.usage
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens} tokens, first token {usage.time_to_first_token_s:.3f}s" if usage else "no usage"
        log.info("%s %s: %s, %.3fs", self.id, status, tokens, elapsed)


async def chat_completion(
    state: ServiceState, body: ChatCompletionRequest, conversation_id: str | None, shape: Shape[W], *, unlimited: bool = False
) -> Reply[W]:
    """Check a chat request, fit it to the context window and find its
    stored conversation: a `Reply` ready to run, answered in ``shape``
    (``unlimited``: see `request_options`)."""
    session = check_model(state, body)
    messages, sampling = body.session_messages(), request_options(state, body, unlimited=unlimited)

    def check(options: dict[str, Any]) -> None:
        session.check_context(messages, options.get("max_tokens"), **body.tool_options())

    await session.off_loop(engine_errors, lambda: fit_default_max_tokens(check, sampling, asked=body.answer_tokens() is not None))
    conversation = find_conversation(state, conversation_id, body, session)
    return Reply(state, session, body, lambda: session.start(messages, **sampling), shape, conversation)


def completion(
    state: ServiceState,
    body: CompletionRequest,
    shape: Shape[W],
    *,
    default_max_tokens: int | None = COMPLETION_MAX_TOKENS,
    unlimited: bool = False,
) -> Reply[W]:
    """Check a text-completion request: a `Reply` ready to run (its prompt is
    counted when it starts, under the request's limits), answered in
    ``shape``. ``default_max_tokens`` applies where neither the request nor
    the config sets one (``unlimited``: see `request_options`)."""
    session = check_model(state, body)
    sampling = {"max_tokens": default_max_tokens, **request_options(state, body, unlimited=unlimited)}

    def start(options: dict[str, Any]) -> ChatStream:
        return session.stream_completion(body.prompt, **options)

    return Reply(state, session, body, lambda: fit_default_max_tokens(start, sampling, asked=body.answer_tokens() is not None), shape)
