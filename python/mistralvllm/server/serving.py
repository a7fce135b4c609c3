"""The serving layer: a validated request in, a `Session` call, and a
response or a stream (server-sent events, or JSON lines) out in the request's
API shape (`Shape`), with the request's stored turn, metrics and log line.

It knows nothing of FastAPI: a route hands it the body (and the conversation
id, and the client's receive channel) and sends back what it returns.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel

from .._core import ChatChunk, ChatStream, TokenLogprob, Usage
from ..collect import StreamedAnswer
from ..config import Config
from ..context_window import context_overflow
from ..errors import ContextOverflowError, RequestError
from ..history import Conversation, ConversationExistsError, HistoryDatabaseError, HistoryError, HistoryWriteError, Turn
from ..session import Session, choice_options
from ..tools import tool_call_body
from .api_error import APIError
from .generation import ClientDisconnected, Limits, Receive, RequestTimedOut, run_choices
from .model_pool import ModelLease
from .openai_logprobs import CompletionLogprobWriter, chat_logprobs
from .openai_requests import ChatCompletionRequest, CompletionRequest
from .openai_responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    Delta,
    PromptTokensDetails,
    ToolCallBody,
    ToolCallDelta,
    UsageBody,
)
from .state import ServiceState

log = logging.getLogger("mistralvllm.server")
# The media type of a stream of server-sent events.
SERVER_SENT_EVENTS = "text/event-stream"
# How often a streaming answer's text so far is written to history, so that
# a crash loses at most this much of it.
PARTIAL_SAVE_INTERVAL_S = 1.0
# OpenAI's max_tokens for a text completion that sets none (and no config default).
COMPLETION_MAX_TOKENS = 16
T = TypeVar("T")
# The body of a whole answer: ChatCompletion, Completion, ...
W = TypeVar("W", bound=BaseModel)
W_co = TypeVar("W_co", bound=BaseModel, covariant=True)


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
    def sampling(self) -> dict[str, Any]: ...


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
    """Run ``call``, answering a history write that failed (e.g. a full disk)
    with 507, and a history database that cannot be reached (e.g. a PostgreSQL
    server that is down) with 503."""
    try:
        return call()
    except HistoryWriteError as e:
        log.error("history write failed: %s", e)
        raise APIError(507, str(e), type="server_error", code="history_write_failed") from None
    except HistoryDatabaseError as e:
        log.error("history unavailable: %s", e)
        raise APIError(503, str(e), type="service_unavailable", code="history_unavailable") from None


def check_limits(state: ServiceState, body: GenerationRequest) -> None:
    """400 unless the request names a served model and stays within the service's limits."""
    state.models.find(body.model)
    limit = state.config.server.max_tokens_limit
    if limit is not None and (body.answer_tokens() or 0) > limit:
        param = body.answer_tokens_param
        raise APIError(400, f"{param} {body.answer_tokens()} is above this service's limit of {limit}", param=param)


async def check_model(state: ServiceState, body: GenerationRequest) -> ModelLease:
    """A lease on the model the request names (loaded if need be), once the
    request stays within the service's limits (`check_limits`)."""
    check_limits(state, body)
    return await state.use(body.model)


async def held(lease: ModelLease, build: Callable[[], Awaitable[T]]) -> T:
    """``build()``, releasing ``lease`` if it fails (else what it built holds the lease)."""
    try:
        return await build()
    except BaseException:
        lease.release()
        raise


def request_options(state: ServiceState, body: GenerationRequest, *, unlimited: bool = False) -> dict[str, Any]:
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


async def fitted_options(
    state: ServiceState, session: Session, body: GenerationRequest, messages: Sequence[Mapping[str, Any]], *, unlimited: bool = False
) -> tuple[dict[str, Any], int]:
    """The request's options (`request_options`) once ``messages`` and the
    answer fit the context window, with the request's tools applied (a
    default max_tokens is lowered to fit, `fit_default_max_tokens`), and the
    prompt's tokens."""
    sampling = request_options(state, body, unlimited=unlimited)

    def check(options: dict[str, Any]) -> int:
        return session.check_context(messages, options.get("max_tokens"), **{key: options[key] for key in ("tools", "tool_choice") if key in options})

    def fit() -> int:
        try:
            return fit_default_max_tokens(check, sampling, asked=body.answer_tokens() is not None)
        except ContextOverflowError as e:
            # Named in the request's own fields (the session names its options).
            overflow = context_overflow(e.prompt_tokens, e.max_tokens, e.context_length, answer_param=body.answer_tokens_param)
            raise APIError(400, str(overflow), param=body.prompt_param, code="context_length_exceeded") from None

    prompt_tokens = await session.off_loop(engine_errors, fit)
    return sampling, prompt_tokens


def find_conversation(state: ServiceState, conversation_id: str | None, body: ChatCompletionRequest, session: Session) -> Conversation | None:
    """The stored conversation a request belongs to (``X-Conversation-Id`` or ``user``)."""
    conversation_id = conversation_id or body.user
    history = state.history
    if not conversation_id or history is None:
        return None
    system = next((m.text() for m in body.messages if m.role == "system"), None)

    def find() -> Conversation:
        if not history.exists(conversation_id):
            try:
                return history.new(
                    model=session.info()["model"], config_digest=state.config.digest(), system_prompt=system, conversation_id=conversation_id
                )
            except ConversationExistsError:
                pass  # another request (or another service sharing the history) made it just now
        conversation = history.resume(conversation_id)
        if system is not None and system != conversation.system_prompt:
            conversation.set_system_prompt(system)
        return conversation

    try:
        return history_writes(find)
    except HistoryError as e:
        raise APIError(400, str(e), param="X-Conversation-Id") from None


def usage_body(usage: Usage | None, completion_tokens: int | None = None) -> UsageBody | None:
    """OpenAI's usage of an answer (``completion_tokens`` given: of several
    answers to one prompt)."""
    if usage is None:
        return None
    completion = usage.completion_tokens if completion_tokens is None else completion_tokens
    return UsageBody(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=completion,
        total_tokens=usage.prompt_tokens + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens),
    )


def system_fingerprint(config: Config) -> str:
    """OpenAI's ``system_fingerprint``: names the settings that shape answers
    (`Config.digest`), so a client sees when they change."""
    return f"fp_{config.digest()}"


def body_json(body: BaseModel | dict[str, Any]) -> str:
    """``body`` as JSON on one line; a response body sends the fields it was built with."""
    return json.dumps(body.model_dump(exclude_unset=True) if isinstance(body, BaseModel) else body)


def event(body: BaseModel | dict[str, Any], name: str | None = None) -> str:
    """One server-sent event (with an ``event:`` line if ``name`` is given)."""
    return (f"event: {name}\n" if name else "") + f"data: {body_json(body)}\n\n"


def json_line(body: BaseModel | dict[str, Any]) -> str:
    """One line of a JSON-lines stream (Ollama's)."""
    return body_json(body) + "\n"


def reply_id(prefix: str) -> str:
    """A new answer's id: ``prefix`` and 24 random hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class Shape(Protocol[W_co]):
    """An API surface's bodies: the whole answer, or the stream texts
    (server-sent events, JSON lines) that stream it, sent as ``media_type``
    (each a list of texts, in the order sent; an empty list sends nothing). A
    shape serves one answer, so it may keep what it has sent so far."""

    media_type: str

    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> W_co: ...
    def opening(self, head: dict[str, Any]) -> list[str]: ...
    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> list[str]: ...
    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]: ...
    def failure(self, head: dict[str, Any], error: APIError) -> list[str]: ...


class OpenAIStream(ABC):
    """What chat and text completions share: ``n`` answers to one request
    (choices with their index), the usage when asked
    (``stream_options.include_usage``) then ``[DONE]`` at the end of a
    stream, and an error as one event."""

    media_type = SERVER_SENT_EVENTS

    def __init__(self, body: ChatCompletionRequest | CompletionRequest) -> None:
        self.include_usage = body.stream_options is not None and body.stream_options.include_usage

    @abstractmethod
    def whole(self, head: dict[str, Any], answer: StreamedAnswer, index: int = 0) -> ChatCompletion | Completion: ...

    @abstractmethod
    def usage(self, head: dict[str, Any], usage: UsageBody) -> BaseModel: ...

    def whole_choices(self, head: dict[str, Any], answers: Sequence[StreamedAnswer]) -> ChatCompletion | Completion:
        """One body with every answer as a choice, and the request's usage."""
        bodies = [self.whole(head, answer, index) for index, answer in enumerate(answers)]
        return bodies[0].model_copy(update={"choices": [body.choices[0] for body in bodies], "usage": total_usage(answers)})

    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]:
        return self.closing_choices(head, [answer])

    def closing_choices(self, head: dict[str, Any], answers: Sequence[StreamedAnswer]) -> list[str]:
        usage = total_usage(answers)
        return [*([event(self.usage(head, usage))] if self.include_usage and usage is not None else []), "data: [DONE]\n\n"]

    def failure(self, head: dict[str, Any], error: APIError) -> list[str]:
        return [event(error.body())]


def total_usage(answers: Sequence[StreamedAnswer]) -> UsageBody | None:
    """The usage of a request's answers: its prompt once, every answer's tokens."""
    usages = [answer.usage for answer in answers if answer.usage is not None]
    if not usages or len(usages) < len(answers):
        return None
    return usage_body(usages[0], completion_tokens=sum(usage.completion_tokens for usage in usages))


class ChatShape(OpenAIStream):
    """Chat completions' bodies: a message when whole; when streamed, a first
    delta that names the role, then a delta per chunk; with ``logprobs``
    when the request asked for them."""

    def __init__(self, body: ChatCompletionRequest) -> None:
        super().__init__(body)
        self.logprobs = bool(body.logprobs)

    def whole(self, head: dict[str, Any], answer: StreamedAnswer, index: int = 0) -> ChatCompletion:
        calls = answer.tool_calls
        message = AssistantMessage(role="assistant", content=answer.text if answer.text or not calls else None)
        if calls:
            message.tool_calls = [ToolCallBody.model_validate(tool_call_body(call)) for call in calls]
        logprobs = chat_logprobs(answer.logprobs) if self.logprobs else None
        choice = ChatChoice(index=index, message=message, finish_reason=answer.finish_reason, logprobs=logprobs)
        return ChatCompletion(**head, object="chat.completion", choices=[choice], usage=usage_body(answer.usage))

    def opening(self, head: dict[str, Any], index: int = 0) -> list[str]:
        choice = ChunkChoice(index=index, delta=Delta(role="assistant", content=""), finish_reason=None)
        return [event(ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[choice]))]

    def chunk(self, head: dict[str, Any], chunk: ChatChunk, index: int = 0) -> list[str]:
        delta = Delta(content=chunk.text) if chunk.text else Delta()
        if chunk.tool_calls:
            delta.tool_calls = [ToolCallDelta.model_validate({"index": i, **tool_call_body(call)}) for i, call in enumerate(chunk.tool_calls)]
        choice = ChunkChoice(index=index, delta=delta, finish_reason=chunk.finish_reason)
        if self.logprobs:
            choice.logprobs = chat_logprobs(chunk.logprobs)
        return [event(ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[choice]))]

    def usage(self, head: dict[str, Any], usage: UsageBody) -> ChatCompletionChunk:
        return ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[], usage=usage)


class CompletionShape(OpenAIStream):
    """Text completions' bodies: the same object whole and per streamed
    chunk; with ``logprobs`` when the request asked for them (each answer's
    text offsets run on from the prompt)."""

    def __init__(self, body: CompletionRequest) -> None:
        super().__init__(body)
        self.logprobs = body.logprobs is not None
        self.prompt_length = len(body.prompt)
        self.writers: dict[int, CompletionLogprobWriter] = {}

    def _logprobs(self, index: int, entries: Sequence[TokenLogprob]) -> CompletionLogprobs | None:
        if not self.logprobs:
            return None
        return self.writers.setdefault(index, CompletionLogprobWriter(self.prompt_length)).write(entries)

    def whole(self, head: dict[str, Any], answer: StreamedAnswer, index: int = 0) -> Completion:
        logprobs = self._logprobs(index, answer.logprobs)
        choice = CompletionChoice(index=index, text=answer.text, finish_reason=answer.finish_reason, logprobs=logprobs)
        return Completion(**head, object="text_completion", choices=[choice], usage=usage_body(answer.usage))

    def opening(self, head: dict[str, Any], index: int = 0) -> list[str]:
        return []

    def chunk(self, head: dict[str, Any], chunk: ChatChunk, index: int = 0) -> list[str]:
        logprobs = self._logprobs(index, chunk.logprobs)
        choice = CompletionChoice(index=index, text=chunk.text, finish_reason=chunk.finish_reason, logprobs=logprobs)
        return [event(Completion(**head, object="text_completion", choices=[choice]))]

    def usage(self, head: dict[str, Any], usage: UsageBody) -> Completion:
        return Completion(**head, object="text_completion", choices=[], usage=usage)


class Reply(Generic[W]):
    """One request that passed its checks, answered whole (`whole`) or
    streamed in its shape (`events`).

    The question is stored (as ``turn``, begun by the caller) before the
    answer starts, so a crash or a full disk shows up in history (or as a
    507) and loses nothing written. Every request ends with one log line (ok,
    length, disconnected, error or timed out) and with its answer in history
    (interrupted unless finished).

    ``more`` starts the request's other answers (``n`` above 1: chat and
    text completions only), written together with the first; the first is
    the one stored.

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
        if more and not isinstance(shape, OpenAIStream):
            raise TypeError("several answers to one request need an OpenAI shape")
        self.id = id
        self.head: dict[str, Any] = {
            "id": self.id,
            "created": int(time.time()),
            "model": lease.name,
            "system_fingerprint": system_fingerprint(state.config),
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
            async for index, chunk in run_choices(self.session, self.starts, limits, engine_errors):
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
        if isinstance(self.shape, OpenAIStream) and len(self.answers) > 1:
            return cast(W, self.shape.whole_choices(self.head, self.answers))
        return self.shape.whole(self.head, self.answer)

    async def events(self) -> AsyncIterator[str]:
        """The answer streamed in the shape's API (server-sent events, JSON
        lines), ending with its closing texts or its error texts."""
        # Everything is acquired inside the generator, so a response that
        # is never sent holds no engine slot and no stream. Starlette
        # cancels it when the client leaves (status "disconnected").
        limits = Limits.start(self.state.config.server.request_timeout, None)
        status, self._saved = "disconnected", time.monotonic()
        several = self.shape if isinstance(self.shape, OpenAIStream) and len(self.answers) > 1 else None
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
            async for index, chunk in run_choices(self.session, self.starts, limits, engine_errors):
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
                self.turn.finish(answer.as_written(), usage=answer.usage, finish_reason=answer.finish_reason, interrupted=not answer.finished)
            except HistoryError as e:
                log.error("could not store the answer to %s: %s", self.id, e)
        elapsed = time.monotonic() - self.started
        for each in self.answers:
            self.state.metrics.observe(self.lease.name, each.usage, elapsed)
        usage = answer.usage
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens} tokens, first token {usage.time_to_first_token_s:.3f}s" if usage else "no usage"
        log.info("%s %s: %s, %.3fs", self.id, status, tokens, elapsed)


async def chat_completion(state: ServiceState, body: ChatCompletionRequest, conversation_id: str | None) -> Reply[ChatCompletion]:
    """A chat request answered in OpenAI's bodies (see `chat_reply`)."""
    return await chat_reply(state, body, conversation_id, lambda _: ChatShape(body), id_prefix="chatcmpl-")


async def chat_reply(
    state: ServiceState,
    body: ChatCompletionRequest,
    conversation_id: str | None,
    shape: Callable[[int], Shape[W]],
    *,
    id_prefix: str,
    unlimited: bool = False,
    lease: ModelLease | None = None,
) -> Reply[W]:
    """Check a chat request, fit it to the context window and find its
    stored conversation: a `Reply` ready to run, answered in the shape that
    ``shape`` builds from the prompt's tokens, under an id that starts with
    ``id_prefix`` (``unlimited``: see `request_options`), on ``lease``'s
    model (else the one the request names)."""
    lease = lease or await check_model(state, body)
    session = lease.session

    async def build() -> Reply[W]:
        messages = body.session_messages()
        sampling, prompt_tokens = await fitted_options(state, session, body, messages, unlimited=unlimited)
        conversation = find_conversation(state, conversation_id, body, session)
        turn = None
        if conversation is not None:
            question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
            turn = history_writes(lambda: conversation.begin_turn(question))
        start, *more = [functools.partial(session.start, messages, **options) for options in answer_options(session, sampling, body.n)]
        return Reply(state, lease, body, start, shape(prompt_tokens), id=reply_id(id_prefix), turn=turn, more=more)

    return await held(lease, build)


def answer_options(session: Session, sampling: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The options of each of a request's ``n`` answers (`choice_options`);
    400 when they would not all run at once in the engine."""
    if n > 1 and n > (most := session.info()["max_running_sequences"]):
        raise APIError(400, f"n: {n} answers cannot run at once; this engine runs at most {most} sequences (max_num_seqs)", param="n")
    return choice_options(sampling, n)


async def prompt_tokens(state: ServiceState, body: ChatCompletionRequest) -> int:
    """The tokens a chat request's prompt takes (its messages under the chat
    template, with its tools), as its answer's usage will count them."""
    check_limits(state, body)
    async with state.session_for(body.model) as session:
        return await session.off_loop(engine_errors, lambda: session.count_tokens(body.session_messages(), **body.tool_options()))


async def completion(state: ServiceState, body: CompletionRequest) -> Reply[Completion]:
    """A text-completion request answered in OpenAI's bodies (see `completion_reply`)."""
    return await completion_reply(state, body, CompletionShape(body), id_prefix="cmpl-", default_max_tokens=COMPLETION_MAX_TOKENS)


async def completion_reply(
    state: ServiceState,
    body: CompletionRequest,
    shape: Shape[W],
    *,
    id_prefix: str,
    default_max_tokens: int | None,
    unlimited: bool = False,
    lease: ModelLease | None = None,
) -> Reply[W]:
    """Check a text-completion request: a `Reply` ready to run (its prompt is
    counted when it starts, under the request's limits), answered in
    ``shape`` under an id that starts with ``id_prefix``, on ``lease``'s
    model (else the one the request names). ``default_max_tokens`` applies
    where neither the request nor the config sets one (``unlimited``: see
    `request_options`)."""
    lease = lease or await check_model(state, body)
    session = lease.session
    sampling = {"max_tokens": default_max_tokens, **request_options(state, body, unlimited=unlimited)}

    def start(options: dict[str, Any]) -> ChatStream:
        return session.stream_completion(body.prompt, **options)

    def fitted_start(options: dict[str, Any]) -> ChatStream:
        return fit_default_max_tokens(start, options, asked=body.answer_tokens() is not None)

    async def build() -> Reply[W]:
        first, *more = [functools.partial(fitted_start, options) for options in answer_options(session, sampling, body.n)]
        return Reply(state, lease, body, first, shape, id=reply_id(id_prefix), more=more)

    return await held(lease, build)
