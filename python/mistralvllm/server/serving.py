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
from ..embeddings import Embedding, EmbeddingInputs
from ..errors import ContextOverflowError, RequestError
from ..images import aresolve_images, content_images, content_text, has_images
from ..sampling import SamplingParams
from ..session import Session
from ..thinking import template_thinks
from .api_error import APIError, engine_errors
from .model_pool import ModelLease
from .openai.requests import ChatCompletionRequest, CompletionRequest
from .reply import GenerationRequest, Reply, Shape, W
from .state import ServiceState
from .stored_conversation import find_conversation, history_writes

T = TypeVar("T")


def fit_default_max_tokens(check: Callable[[SamplingParams], T], sampling: SamplingParams, *, asked: bool) -> tuple[SamplingParams, T]:
    """``sampling`` and ``check(sampling)``; where the prompt leaves less room
    than a max_tokens the client did not ask for (a config default, ``asked``
    false), that max_tokens is lowered to the room, as vLLM does for an unset
    max_tokens."""
    try:
        return sampling, check(sampling)
    except ContextOverflowError as e:
        room = getattr(e, "context_length", 0) - getattr(e, "prompt_tokens", 0)
        if asked or room < 1:
            raise
        fitted = sampling.replace(max_tokens=room)
        return fitted, check(fitted)


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


def request_sampling(state: ServiceState, body: GenerationRequest, *, unlimited: bool = False) -> SamplingParams:
    """The request's `SamplingParams` over the config's ``sampling``
    defaults, which apply to every field a request leaves out (as vLLM's
    generation config and llama-server's n_predict do). ``unlimited``: the
    client asked for no answer limit (Ollama's ``num_predict: -1``), so the
    default max_tokens gives way to ``server.max_tokens_limit``, if any, and
    otherwise the answer may fill the context window."""
    defaults = state.config.sampling
    if unlimited:
        defaults = defaults.model_copy(update={"max_tokens": state.config.server.max_tokens_limit})
    return body.sampling().over(defaults)


async def fitted_sampling(
    state: ServiceState, session: Session, body: GenerationRequest, messages: Sequence[Mapping[str, Any]], *, unlimited: bool = False
) -> tuple[SamplingParams, int]:
    """The request's sampling (`request_sampling`) once ``messages`` and the
    answer fit the context window, with the request's tools applied (a
    default max_tokens is lowered to fit, `fit_default_max_tokens`), and the
    prompt's tokens."""
    sampling = request_sampling(state, body, unlimited=unlimited)
    tools = body.tool_options()

    def check(params: SamplingParams) -> int:
        return session.check_context(messages, params, **tools)

    def fit() -> tuple[SamplingParams, int]:
        try:
            return fit_default_max_tokens(check, sampling, asked=body.answer_tokens() is not None)
        except ContextOverflowError as e:
            # Named in the request's own fields (the session names its options).
            overflow = context_overflow(e.prompt_tokens, e.max_tokens, e.context_length, answer_param=body.answer_tokens_param)
            raise APIError(400, str(overflow), param=body.prompt_param, code="context_length_exceeded") from None

    return await session.off_loop(engine_errors, fit)


async def request_images(
    state: ServiceState, lease: ModelLease, messages: Sequence[Mapping[str, Any]], *, param: str = "messages"
) -> list[dict[str, Any]]:
    """``messages`` with their images read from where server.images allows
    (`images.aresolve_images`); 400 (naming ``param``) for images sent to a
    model that reads text only, and for an image that cannot be read."""
    if not has_images(messages):
        return [dict(m) for m in messages]
    if not lease.session.info()["vision"]:
        raise APIError(
            400,
            f"{param}: {lease.name} reads text only; images cannot be given to it (serve a vision model, "
            "e.g. a Gemma 3 directory with its vision tower)",
            param=param,
        )
    try:
        return await aresolve_images(messages, state.config.server.images.sources())
    except RequestError as e:
        raise APIError(400, str(e), param=param) from None


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
    ``id_prefix`` (``unlimited``: see `request_sampling`), on ``lease``'s
    model (else the one the request names)."""
    lease = lease or await check_model(state, body)
    session = lease.session

    async def build() -> Reply[W]:
        messages = await request_images(state, lease, body.session_messages())
        sampling, prompt_tokens = await fitted_sampling(state, session, body, messages, unlimited=unlimited)
        conversation = find_conversation(state, conversation_id, body, lease.model)
        turn = None
        if conversation is not None:
            content = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            turn = history_writes(lambda: conversation.begin_turn(content_text(content), images=content_images(content)))
        tools = body.tool_options()
        start, *more = [functools.partial(session.start, messages, params, **tools) for params in answer_sampling(lease, sampling, body.n)]
        return Reply(state, lease, body, start, shape(prompt_tokens), id=reply_id(id_prefix), turn=turn, more=more)

    return await held(lease, build)


def refuse_unthinking(lease: ModelLease, param: str, hint: str) -> None:
    """Thinking asked (``param``) of a model that does not think is a 400, as
    Ollama and Anthropic answer it; ``hint`` says how to ask without it."""
    if not template_thinks(lease.session.info()["chat_template"]):
        lease.release()
        raise APIError(400, f"{param}: {lease.name} does not think before it answers (its chat template has no think tags); {hint}", param=param)


def answer_sampling(lease: ModelLease, sampling: SamplingParams, n: int) -> list[SamplingParams]:
    """The sampling of each of a request's ``n`` answers (`SamplingParams.choices`);
    400 when they would not all run at once in ``lease``'s engine."""
    if n > 1 and n > (most := lease.model.max_running_sequences):
        raise APIError(400, f"n: {n} answers cannot run at once; this engine runs at most {most} sequences (max_num_seqs)", param="n")
    return sampling.choices(n)


async def prompt_tokens(state: ServiceState, body: ChatCompletionRequest) -> int:
    """The tokens a chat request's prompt takes (its messages under the chat
    template, with its tools), as its answer's usage will count them."""
    lease = await check_model(state, body)
    try:
        messages = await request_images(state, lease, body.session_messages())
        session = lease.session
        return await session.off_loop(engine_errors, lambda: session.count_tokens(messages, body.sampling(), **body.tool_options()))
    finally:
        lease.release()


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
    `request_sampling`)."""
    lease = lease or await check_model(state, body)
    session = lease.session
    sampling = request_sampling(state, body, unlimited=unlimited)
    if sampling.max_tokens is None and not unlimited:
        sampling = sampling.replace(max_tokens=default_max_tokens)

    def start(params: SamplingParams) -> ChatStream:
        asked = body.answer_tokens() is not None
        return fit_default_max_tokens(lambda fitted: session.stream_completion(body.prompt, fitted), params, asked=asked)[1]

    async def build() -> Reply[W]:
        first, *more = [functools.partial(start, params) for params in answer_sampling(lease, sampling, body.n)]
        return Reply(state, lease, body, first, shape, id=reply_id(id_prefix), more=more)

    return await held(lease, build)


async def embeddings(lease: ModelLease, inputs: EmbeddingInputs, *, dimensions: int | None = None, truncate: bool = False) -> list[Embedding]:
    """The embeddings of ``inputs`` (`Session.embed`) on ``lease``'s model,
    releasing the lease; 400 for a chat model, and for an input that does
    not fit the context window (unless ``truncate``)."""
    try:
        session = lease.session
        if session.task != "embedding":
            raise APIError(
                400,
                f"model: {lease.name} is a chat model, which computes no embeddings here; serve an embedding model "
                "(a sentence-transformers directory with modules.json) beside it and name that one",
                param="model",
            )
        try:
            return await session.aembed(inputs, dimensions=dimensions, truncate=truncate)
        except ContextOverflowError as e:
            raise APIError(400, str(e), param="input", code="context_length_exceeded") from None
        except RequestError as e:
            param = "dimensions" if str(e).startswith("dimensions") else "input"
            raise APIError(400, str(e), param=param) from None
    finally:
        lease.release()
