"""The serving layer: a validated request is checked (its model, its
limits, its fit in the context window), its conversation found and its
question stored, and it becomes a `Reply` ready to run, answered in the
request's API shape (`Shape`).

Each API's own serving (``openai/``, ``responses/``, ``anthropic/``,
``ollama/``) runs its requests here, translated into OpenAI's where need
be, each answered in its API's shape. It knows nothing of FastAPI: a route
sends the reply it returns (`http_reply.send`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from .._core import ChatStream
from ..context_window import context_overflow
from ..errors import ContextOverflowError
from ..sampling import choice_options
from ..session import Session
from .api_error import APIError, engine_errors
from .model_pool import ModelLease
from .openai.requests import ChatCompletionRequest, CompletionRequest
from .reply import GenerationRequest, Reply, Shape, W
from .state import ServiceState
from .stored_conversation import find_conversation, history_writes

T = TypeVar("T")


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


def reply_id(prefix: str) -> str:
    """A new answer's id: ``prefix`` and 24 random hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


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
        conversation = find_conversation(state, conversation_id, body, lease.model)
        turn = None
        if conversation is not None:
            question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
            turn = history_writes(lambda: conversation.begin_turn(question))
        start, *more = [functools.partial(session.start, messages, **options) for options in answer_options(lease, sampling, body.n)]
        return Reply(state, lease, body, start, shape(prompt_tokens), id=reply_id(id_prefix), turn=turn, more=more)

    return await held(lease, build)


def answer_options(lease: ModelLease, sampling: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The options of each of a request's ``n`` answers (`choice_options`);
    400 when they would not all run at once in ``lease``'s engine."""
    if n > 1 and n > (most := lease.model.max_running_sequences):
        raise APIError(400, f"n: {n} answers cannot run at once; this engine runs at most {most} sequences (max_num_seqs)", param="n")
    return choice_options(sampling, n)


async def prompt_tokens(state: ServiceState, body: ChatCompletionRequest) -> int:
    """The tokens a chat request's prompt takes (its messages under the chat
    template, with its tools), as its answer's usage will count them."""
    check_limits(state, body)
    async with state.session_for(body.model) as session:
        return await session.off_loop(engine_errors, lambda: session.count_tokens(body.session_messages(), **body.tool_options()))


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
        first, *more = [functools.partial(fitted_start, options) for options in answer_options(lease, sampling, body.n)]
        return Reply(state, lease, body, first, shape, id=reply_id(id_prefix), more=more)

    return await held(lease, build)
