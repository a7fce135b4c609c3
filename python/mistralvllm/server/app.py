"""The FastAPI application: OpenAI-compatible chat, models, health, metrics,
conversations, and the web chat page.

One `Session` serves every request; the engine decodes them together
(continuous batching).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._core import ToolCall, Usage
from ..config import Config
from ..errors import ContextOverflowError, MistralVllmError, RequestError
from ..history import ChatHistory, Conversation, HistoryError, HistoryWriteError, Turn
from ..session import Session
from ..tools import calls_as_text, tool_call_body
from .generation import ClientDisconnected, Generation, Limits, RequestTimedOut, run_generation
from .metrics import ServiceMetrics
from .openai_schema import ChatCompletionRequest, CompletionRequest, SamplingRequest

log = logging.getLogger("mistralvllm.server")
STATIC = resources.files("mistralvllm.server") / "static"
# How often a streaming answer's text so far is written to history, so that
# a crash loses at most this much of it.
PARTIAL_SAVE_INTERVAL_S = 1.0
# OpenAI's max_tokens for a text completion that sets none (and no config default).
COMPLETION_MAX_TOKENS = 16
T = TypeVar("T")


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        """The error object, as answered and as sent in a server-sent event."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.code == "request_timeout":
            # The openai client retries 5xx answers unless told not to, which
            # would run the same long request again, twice.
            headers["x-should-retry"] = "false"
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class BodyLimit:
    """Answer 413 to request bodies over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = APIError(413, f"request body is larger than {self.limit} bytes", code="request_too_large").response()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except _BodyTooLarge:
            await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class RenameRequest(BaseModel):
    """`PATCH /v1/conversations/{id}`: a new title."""

    title: str = Field(max_length=200)


class ServiceState:
    """The session being loaded or loaded, and what the routes share."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.session: Session | None = None
        self.load_error: str | None = None
        self.model_id = "loading"
        self.history = ChatHistory(config.history.path) if config.history.enabled else None
        self.metrics = ServiceMetrics(
            lambda: self.session.sequence_counts() if self.session else None,
            lambda: self.session.engine_stats() if self.session else None,
        )

    def load(self) -> None:
        try:
            session = Session(**self.config.session_options())
        except MistralVllmError as e:
            self.load_error = str(e)
            log.error("model failed to load: %s", e)
            return
        self.model_id = Path(session.info()["model"]).name.removesuffix(".gguf")
        self.session = session
        log.info("model %s loaded (%s)", self.model_id, session.info()["device"])

    def ready_session(self) -> Session:
        if self.session is None:
            message = f"the model failed to load: {self.load_error}" if self.load_error else "the model is still loading"
            raise APIError(503, message, type="service_unavailable", code="model_not_ready")
        return self.session


def _body_problem(cause: BaseException | None) -> str | None:
    """What was wrong with a body FastAPI could not parse (it says only
    "There was an error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not valid UTF-8 (byte {cause.object[cause.start]:#04x} at position {cause.start}); send JSON in UTF-8"
    if isinstance(cause, RecursionError):
        return "the request body's JSON is nested too deeply to parse"
    return None


def _history_writes(call: Callable[[], Any]) -> Any:
    """Run ``call``, answering a history write that failed (e.g. a full disk) with 507."""
    try:
        return call()
    except HistoryWriteError as e:
        log.error("history write failed: %s", e)
        raise APIError(507, str(e), type="server_error", code="history_write_failed") from None


def _conversation(state: ServiceState, request: Request, body: ChatCompletionRequest, session: Session) -> Conversation | None:
    """The stored conversation a request belongs to (``X-Conversation-Id`` or ``user``)."""
    conversation_id = request.headers.get("x-conversation-id") or body.user
    if not conversation_id or state.history is None:
        return None
    system = next((m.text() for m in body.messages if m.role == "system"), None)
    try:
        if state.history.exists(conversation_id):
            conversation = state.history.resume(conversation_id)
            if system is not None and system != conversation.system_prompt:
                _history_writes(lambda: conversation.set_system_prompt(system))
            return conversation
        return _history_writes(
            lambda: state.history.new(
                model=session.info()["model"], config_digest=state.config.digest(), system_prompt=system, conversation_id=conversation_id
            )
        )
    except HistoryError as e:
        raise APIError(400, str(e), param="X-Conversation-Id") from None


def answer_text(parts: list[str], calls: list[ToolCall]) -> str:
    """What history stores as the answer: the text, or the calls as the model wrote them."""
    if calls:
        return calls_as_text([tool_call_body(call) for call in calls])
    return "".join(parts)


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


def _usage_body(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens}


def create_app(config: Config) -> FastAPI:
    """The service for ``config``; the model loads in the background at start-up."""
    state = ServiceState(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=state.load, name="mistralvllm-load", daemon=True)
        loader.start()
        yield
        if state.session is not None:
            state.session.close()

    app = FastAPI(title="mistralvllm", version="0.1.0", lifespan=lifespan)
    app.state.service = state
    app.add_middleware(BodyLimit, limit=config.server.max_request_bytes)

    def require_key(request: Request) -> None:
        expected = config.server.api_key
        if expected is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
            raise APIError(401, "missing or wrong API key (send Authorization: Bearer <key>)", type="authentication_error", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            loc = [str(part) for part in item["loc"] if part != "body"]
            problems.append((".".join(loc), item["msg"]))
        param = problems[0][0] if problems else None
        message = "; ".join(f"{field}: {msg}" if field else msg for field, msg in problems)
        return APIError(400, message, param=param or None).response()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return APIError(error.status_code, _body_problem(error.__cause__) or str(error.detail), type=kind).response()

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path.startswith("/v1/"):
            state.metrics.requests.labels(request.url.path, str(response.status_code)).inc()
            if request.method == "POST" and not getattr(request.state, "logged", False):
                log.info("%s %s: error %d", request.method, request.url.path, response.status_code)
        return response

    def check_model(body: SamplingRequest) -> Session:
        session = state.ready_session()
        if body.model != state.model_id:
            raise APIError(404, f"model {body.model!r} does not exist; this service serves {state.model_id!r}", param="model", code="model_not_found")
        limit = config.server.max_tokens_limit
        if limit is not None and (body.answer_tokens() or 0) > limit:
            raise APIError(400, f"max_tokens {body.answer_tokens()} is above this service's limit of {limit}", param="max_tokens")
        return session

    def request_options(body: SamplingRequest) -> dict[str, Any]:
        """The request's sampling options over the config's ``sampling``
        defaults, which apply to every field a request leaves out (as vLLM's
        generation config and llama-server's n_predict do)."""
        return {**config.sampling.options(), **body.sampling()}

    def begin_turn(conversation: Conversation | None, body: SamplingRequest) -> Turn | None:
        """Store the question before answering, so a crash leaves it marked interrupted."""
        if conversation is None or not isinstance(body, ChatCompletionRequest):
            return None
        question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
        return _history_writes(lambda: conversation.begin_turn(question))

    def observe(request_id: str, usage: Usage | None, started: float, status: str) -> None:
        """The one log line (and the metrics) of a request that reached the engine."""
        elapsed = time.monotonic() - started
        state.metrics.request_duration.observe(elapsed)
        if usage is not None:
            state.metrics.prompt_tokens.inc(usage.prompt_tokens)
            state.metrics.completion_tokens.inc(usage.completion_tokens)
            state.metrics.time_to_first_token.observe(usage.time_to_first_token_s)
            if usage.decode_tok_per_s > 0:
                state.metrics.time_per_output_token.observe(1 / usage.decode_tok_per_s)
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens} tokens, first token {usage.time_to_first_token_s:.3f}s" if usage else "no usage"
        log.info("%s %s: %s, %.3fs", request_id, status, tokens, elapsed)

    def engine_errors(call: Callable[[], Any]) -> Any:
        """Run ``call``, answering the session's request errors in OpenAI's shape."""
        try:
            return call()
        except ContextOverflowError as e:
            raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None
        except RequestError as e:
            raise APIError(400, str(e)) from None

    def timeout_error() -> APIError:
        limit = config.server.request_timeout
        return APIError(
            504,
            f"the request took longer than this service's limit of {limit:g} s (server.request_timeout); the answer so far is stored as interrupted",
            type="timeout_error",
            code="request_timeout",
        )

    async def respond(
        session: Session,
        body: SamplingRequest,
        request: Request,
        *,
        start: Callable[[], Any],
        kind: str,
        choice: Callable[[str, str | None, list[ToolCall]], dict[str, Any]],
        conversation: Conversation | None = None,
    ) -> Response:
        """Run one generation and answer it whole or as server-sent events.

        ``kind`` is the OpenAI object name ("chat.completion" or
        "text_completion"); ``choice(text, finish_reason, tool_calls)`` shapes
        one choice (a whole answer when not streaming, a delta when streaming).
        Every request ends with one log line: ok, length, disconnected, error
        or timed out, and with its answer in history (interrupted unless finished).
        """
        request_id = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        started = time.monotonic()
        headers = {"X-Conversation-Id": conversation.id} if conversation else {}

        def payload(choices: list[dict[str, Any]], usage: Usage | None, chunk: bool) -> dict[str, Any]:
            body_kind = kind + (".chunk" if chunk and kind == "chat.completion" else "")
            result: dict[str, Any] = {"id": request_id, "object": body_kind, "created": created, "model": state.model_id, "choices": choices}
            if usage is not None or not chunk:
                result["usage"] = _usage_body(usage) if usage else None
            return result

        # The question is stored before the answer starts, so a crash or a
        # full disk shows up in history (or as a 507) and loses nothing written.
        turn = begin_turn(conversation, body)
        generation = Generation()

        def end(status: str) -> None:
            """Store the answer (interrupted unless it finished) and write the log line."""
            if turn is not None:
                text = answer_text(generation.parts, generation.calls)
                try:
                    turn.finish(text, usage=generation.usage, finish_reason=generation.finish_reason, interrupted=generation.finish_reason is None)
                except HistoryError as e:
                    log.error("could not store the answer to %s: %s", request_id, e)
            observe(request_id, generation.usage, started, status)

        request.state.logged = True  # `end` writes this request's log line
        if not body.stream:
            limits = Limits.start(config.server.request_timeout, request)
            status = "error"
            try:
                async for chunk in run_generation(session, start, limits, engine_errors):
                    generation.add(chunk)
                status = generation.status
            except RequestTimedOut:
                status = "timed out"
                raise timeout_error() from None
            except ClientDisconnected:
                status = "disconnected"
                return Response(status_code=499)  # nobody reads it (nginx's "client closed request")
            finally:
                limits.stop()
                end(status)
            choices = [choice(generation.text, generation.finish_reason, generation.calls)]
            return JSONResponse(payload(choices, generation.usage, chunk=False), headers=headers)

        async def events() -> AsyncIterator[str]:
            # Everything is acquired inside the generator, so a response that
            # is never sent holds no engine slot and no stream. Starlette
            # cancels it when the client leaves (status "disconnected").
            limits = Limits.start(config.server.request_timeout, None)
            status, saved = "disconnected", time.monotonic()
            try:
                if kind == "chat.completion":
                    yield f"data: {json.dumps(payload([{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None}], None, True))}\n\n"
                async for chunk in run_generation(session, start, limits, engine_errors):
                    generation.add(chunk)
                    if chunk.finish_reason is None and turn is not None and time.monotonic() - saved > PARTIAL_SAVE_INTERVAL_S:
                        saved = time.monotonic()
                        try:
                            turn.save_partial(generation.text)
                        except HistoryError as e:
                            log.error("could not save the answer so far to %s: %s", request_id, e)
                    yield f"data: {json.dumps(payload([choice(chunk.text, chunk.finish_reason, chunk.tool_calls)], None, True))}\n\n"
                if body.stream_options and body.stream_options.include_usage and generation.usage is not None:
                    yield f"data: {json.dumps(payload([], generation.usage, True))}\n\n"
                status = generation.status
                yield "data: [DONE]\n\n"
            except APIError as e:  # the engine refused the request (e.g. a bad regex)
                status = "error"
                yield f"data: {json.dumps(e.body())}\n\n"
            except RequestTimedOut:
                status = "timed out"
                yield f"data: {json.dumps(timeout_error().body())}\n\n"
            except Exception:
                status = "error"
                raise
            finally:
                end(status)

        return StreamingResponse(events(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        session = check_model(body)
        messages, sampling = body.session_messages(), request_options(body)

        def check(options: dict[str, Any]) -> None:
            session.check_context(messages, options.get("max_tokens"), **body.tool_options())

        await session.off_loop(engine_errors, lambda: fit_default_max_tokens(check, sampling, asked=body.answer_tokens() is not None))
        conversation = _conversation(state, request, body, session)

        def choice(text: str, finish: str | None, calls: list[ToolCall]) -> dict[str, Any]:
            if body.stream:
                delta: dict[str, Any] = {"content": text} if text else {}
                if calls:
                    delta["tool_calls"] = [{"index": i, **tool_call_body(call)} for i, call in enumerate(calls)]
                return {"index": 0, "delta": delta, "finish_reason": finish}
            message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
            if calls:
                message["tool_calls"] = [tool_call_body(call) for call in calls]
            return {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}

        return await respond(
            session, body, request, start=lambda: session.start(messages, **sampling), kind="chat.completion", choice=choice, conversation=conversation
        )

    @app.post("/v1/completions", dependencies=[Depends(require_key)])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        session = check_model(body)

        sampling = {"max_tokens": COMPLETION_MAX_TOKENS, **request_options(body)}

        def start(options: dict[str, Any]) -> Any:
            return session.stream_completion(body.prompt, **options)

        def choice(text: str, finish: str | None, _calls: list[ToolCall]) -> dict[str, Any]:
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        return await respond(
            session, body, request, start=lambda: fit_default_max_tokens(start, sampling, asked=body.answer_tokens() is not None), kind="text_completion", choice=choice
        )

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models() -> dict[str, Any]:
        state.ready_session()
        return {"object": "list", "data": [{"id": state.model_id, "object": "model", "created": 0, "owned_by": "mistralvllm"}]}

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.session is not None:
            return JSONResponse({"status": "ok", "model": state.model_id})
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)

    @app.get("/metrics", dependencies=[Depends(require_key)])
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def history() -> ChatHistory:
        if state.history is None:
            raise APIError(404, "history is off in this service's config", code="history_disabled")
        return state.history

    @app.get("/v1/conversations", dependencies=[Depends(require_key)])
    async def conversations(limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        return {"object": "list", "data": [asdict(c) for c in history().list(limit=limit)]}

    @app.get("/v1/conversations/{conversation_id}", dependencies=[Depends(require_key)])
    async def conversation(conversation_id: str) -> dict[str, Any]:
        store = history()
        try:
            summary = store.show(conversation_id)
        except HistoryError as e:
            raise APIError(404, str(e), code="conversation_not_found") from None
        return {**asdict(summary), "messages": [asdict(m) for m in store.messages(summary.id)]}

    @app.patch("/v1/conversations/{conversation_id}", dependencies=[Depends(require_key)])
    async def rename_conversation(conversation_id: str, body: RenameRequest) -> dict[str, Any]:
        try:
            history().rename(conversation_id, body.title)
        except HistoryError as e:
            raise APIError(404, str(e), code="conversation_not_found") from None
        return {"id": conversation_id, "title": body.title}

    @app.delete("/v1/conversations/{conversation_id}", dependencies=[Depends(require_key)])
    async def delete_conversation(conversation_id: str) -> dict[str, Any]:
        try:
            history().delete(conversation_id)
        except HistoryError as e:
            raise APIError(404, str(e), code="conversation_not_found") from None
        return {"id": conversation_id, "deleted": True}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    return app
