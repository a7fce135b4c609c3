"""Ollama's `/api/chat` and `/api/generate` on the serving layer: each request
runs as the OpenAI request it translates to (`server.serving.chat_reply`,
or `completion_reply` for a raw prompt), with its checks, history and
metrics, and is answered in Ollama's bodies: whole, or as JSON lines whose
last one is ``done``.

As Ollama does, these requests wait for their model while it loads (within
``server.request_timeout``) and keep it loaded for their ``keep_alive``; an
empty prompt or message list only loads it (``done_reason: "load"``), or
unloads it with ``keep_alive`` 0 (``"unload"``).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from ..._core import ChatChunk, ToolCall
from ...collect import StreamedAnswer
from ..api_error import APIError
from ..model_pool import ModelLease
from ..reply import Reply
from ..serving import chat_reply, completion_reply, embeddings, refuse_unthinking
from ..state import ServiceState
from ..stream_text import json_line
from .bodies import (
    Answer,
    AnswerMessage,
    AnswerToolCall,
    AnswerToolCallFunction,
    ChatResponse,
    EmbeddingsResponse,
    EmbedResponse,
    GenerateResponse,
    error_body,
)
from .requests import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, ModelRequest, OllamaGenerationRequest

# The prefix of an answer's id (in the log and the history; Ollama's bodies have none).
ID_PREFIX = "ollama-"
A = TypeVar("A", bound=Answer)


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def thinking_field(thinking: str) -> dict[str, str]:
    """``thinking`` where there is some (a body leaves out what it does not set)."""
    return {"thinking": thinking} if thinking else {}


def tool_call_body(index: int, call: ToolCall) -> AnswerToolCall:
    """A call the model made, in Ollama's shape: its arguments as an object."""
    arguments = json.loads(call.arguments or "{}")
    if not isinstance(arguments, dict):
        raise APIError(502, f"the model called {call.name} with arguments that are not a JSON object: {call.arguments}", type="server_error")
    return AnswerToolCall(id=call.id, function=AnswerToolCallFunction(index=index, name=call.name, arguments=arguments))


class AnswerShape(ABC, Generic[A]):
    """Ollama's answer bodies, for `Reply`: a line per chunk that has
    text (or tool calls), then a last line with ``done``, why it stopped and
    the timings from the request's `Usage`; or all of that in one body."""

    media_type = "application/x-ndjson"
    choices = None  # one answer to a request: no n

    def __init__(self, load_duration_ns: int) -> None:
        self.load_duration_ns = load_duration_ns

    @abstractmethod
    def line(self, head: dict[str, Any], text: str, calls: list[ToolCall], done: dict[str, Any] | None, thinking: str = "") -> A:
        """One body: ``text`` (and ``calls``, ``thinking``), and ``done``'s fields if it is the last."""

    def timings(self, answer: StreamedAnswer) -> dict[str, Any]:
        """``done`` with why the answer stopped and, from its usage, the timings."""
        fields: dict[str, Any] = {"done": True}
        if answer.finish_reason is not None:
            fields["done_reason"] = "length" if answer.finish_reason == "length" else "stop"
        if (usage := answer.usage) is not None:
            fields.update(
                total_duration=nanoseconds(usage.total_time_s) + self.load_duration_ns,
                load_duration=self.load_duration_ns,
                prompt_eval_count=usage.prompt_tokens,
                prompt_eval_duration=nanoseconds(usage.prompt_time_s),
                eval_count=usage.completion_tokens,
                eval_duration=nanoseconds(usage.total_time_s - usage.time_to_first_token_s),
            )
        return fields

    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> A:
        return self.line(head, answer.text, answer.tool_calls, self.timings(answer), answer.reasoning)

    def opening(self, head: dict[str, Any]) -> list[str]:
        return []

    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> list[str]:
        if not chunk.text and not chunk.tool_calls and not chunk.reasoning:
            return []
        return [json_line(self.line(head, chunk.text, chunk.tool_calls, None, chunk.reasoning))]

    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]:
        return [json_line(self.line(head, "", [], self.timings(answer)))]

    def failure(self, head: dict[str, Any], error: APIError) -> list[str]:
        return [json_line(error_body(error))]


class ChatResponseShape(AnswerShape[ChatResponse]):
    def line(self, head: dict[str, Any], text: str, calls: list[ToolCall], done: dict[str, Any] | None, thinking: str = "") -> ChatResponse:
        message = AnswerMessage(role="assistant", content=text, **thinking_field(thinking))
        if calls:
            message.tool_calls = [tool_call_body(i, call) for i, call in enumerate(calls)]
        return ChatResponse(model=head["model"], created_at=now(), message=message, **(done or {"done": False}))


class GenerateResponseShape(AnswerShape[GenerateResponse]):
    def line(self, head: dict[str, Any], text: str, calls: list[ToolCall], done: dict[str, Any] | None, thinking: str = "") -> GenerateResponse:
        return GenerateResponse(model=head["model"], created_at=now(), response=text, **thinking_field(thinking), **(done or {"done": False}))


async def loaded_model(state: ServiceState, body: ModelRequest) -> tuple[ModelLease, int]:
    """A lease on the model ``body`` names once it has loaded (waiting while
    it loads, within ``server.request_timeout``), kept loaded for the
    request's ``keep_alive``, and the nanoseconds this request waited for it."""
    started = time.monotonic()
    lease = await state.models.use(body.model, body.keep_alive_s(state.config.server.keep_alive_s), wait_for_startup=True)
    return lease, nanoseconds(time.monotonic() - started)


def check_thinking(body: OllamaGenerationRequest, lease: ModelLease) -> None:
    """``think`` asked of a model that does not think is refused, as Ollama refuses it."""
    if body.think not in (None, False):
        refuse_unthinking(lease, "think", "leave think out or set it to false")


def load_only(state: ServiceState, body: OllamaGenerationRequest, lease: ModelLease) -> str:
    """An empty request only loads the model (``done_reason: "load"``), or,
    with ``keep_alive`` 0, unloads it (``"unload"``)."""
    lease.release()  # with keep_alive 0, the model is unloaded at once
    return "unload" if lease.keep_alive_s == 0 else "load"


async def chat(state: ServiceState, body: ChatRequest, conversation_id: str | None) -> Reply[ChatResponse] | ChatResponse:
    """A `Reply` to run for ``body``, or, with no messages, the (un)loaded model's answer."""
    lease, waited = await loaded_model(state, body)
    if not body.messages:
        message = AnswerMessage(role="assistant", content="")
        reason = load_only(state, body, lease)
        return ChatResponse(model=lease.name, created_at=now(), message=message, done=True, done_reason=reason, load_duration=waited)
    check_thinking(body, lease)
    request = body.openai_request(lease.name)
    shape = ChatResponseShape(waited)
    return await chat_reply(state, request, conversation_id, lambda _: shape, id_prefix=ID_PREFIX, unlimited=body.options.unlimited, lease=lease)


async def generate(state: ServiceState, body: GenerateRequest, conversation_id: str | None) -> Reply[GenerateResponse] | GenerateResponse:
    """A `Reply` to run for ``body`` (a raw prompt is continued as it is), or,
    with an empty prompt, the (un)loaded model's answer."""
    lease, waited = await loaded_model(state, body)
    if not body.prompt:
        reason = load_only(state, body, lease)
        return GenerateResponse(model=lease.name, created_at=now(), response="", done=True, done_reason=reason, load_duration=waited)
    check_thinking(body, lease)
    shape, unlimited = GenerateResponseShape(waited), body.options.unlimited
    if body.raw:
        request = body.completion_request(lease.name)
        return await completion_reply(state, request, shape, id_prefix=ID_PREFIX, default_max_tokens=None, unlimited=unlimited, lease=lease)
    return await chat_reply(
        state, body.chat_request(lease.name), conversation_id, lambda _: shape, id_prefix=ID_PREFIX, unlimited=unlimited, lease=lease
    )


async def embed(state: ServiceState, body: EmbedRequest) -> EmbedResponse:
    """The inputs' embeddings; no input only loads the model."""
    started = time.monotonic()
    lease, waited = await loaded_model(state, body)
    name = lease.name
    inputs = [body.input] if isinstance(body.input, str) and body.input else body.input or []
    if inputs:
        found = await embeddings(lease, inputs, dimensions=body.dimensions, truncate=body.truncate)
    else:
        lease.release()
        found = []
    return EmbedResponse(
        model=name,
        embeddings=[list(e.vector) for e in found],
        total_duration=nanoseconds(time.monotonic() - started),
        load_duration=waited,
        prompt_eval_count=sum(e.prompt_tokens for e in found),
    )


async def embeddings_of_prompt(state: ServiceState, body: EmbeddingsRequest) -> EmbeddingsResponse:
    """The prompt's embedding (cut to the context, as Ollama's older route
    does); no prompt only loads the model."""
    lease, _ = await loaded_model(state, body)
    if not body.prompt:
        lease.release()
        return EmbeddingsResponse(embedding=[])
    (found,) = await embeddings(lease, body.prompt, truncate=True)
    return EmbeddingsResponse(embedding=list(found.vector))
