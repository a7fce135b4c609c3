"""Ollama's `/api/chat` and `/api/generate` on the serving layer: each request
runs as the OpenAI request it translates to (`serving.chat_reply`, or
`serving.completion_reply` for a raw prompt), with its checks, history and
metrics, and is answered in Ollama's bodies: whole, or as JSON lines whose
last one is ``done``.

As Ollama loads a model on its first request, these requests wait for the
model while it loads (within ``server.request_timeout``), and an empty
prompt or message list only waits for it (``done_reason: "load"``).
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from .._core import ChatChunk, ToolCall
from ..collect import StreamedAnswer
from ..session import Session
from . import serving
from .api_error import APIError
from .ollama_models import served_name
from .ollama_requests import ChatRequest, GenerateRequest, GenerationRequest
from .ollama_responses import Answer, AssistantMessage, ChatResponse, GenerateResponse
from .ollama_responses import ToolCall as ToolCallBody
from .ollama_responses import ToolCallFunction as ToolCallFunctionBody
from .serving import Reply, json_line
from .state import ServiceState

LOAD_POLL_S = 0.05
# The prefix of an answer's id (in the log and the history; Ollama's bodies have none).
ID_PREFIX = "ollama-"
A = TypeVar("A", bound=Answer)


def error_body(error: APIError) -> dict[str, Any]:
    """An error in Ollama's shape: ``{"error": message}``."""
    return {"error": error.message}


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def tool_call_body(index: int, call: ToolCall) -> ToolCallBody:
    """A call the model made, in Ollama's shape: its arguments as an object."""
    arguments = json.loads(call.arguments or "{}")
    if not isinstance(arguments, dict):
        raise APIError(502, f"the model called {call.name} with arguments that are not a JSON object: {call.arguments}", type="server_error")
    return ToolCallBody(id=call.id, function=ToolCallFunctionBody(index=index, name=call.name, arguments=arguments))


class AnswerShape(ABC, Generic[A]):
    """Ollama's answer bodies, for `serving.Reply`: a line per chunk that has
    text (or tool calls), then a last line with ``done``, why it stopped and
    the timings from the request's `Usage`; or all of that in one body."""

    media_type = "application/x-ndjson"

    def __init__(self, load_duration_ns: int) -> None:
        self.load_duration_ns = load_duration_ns

    @abstractmethod
    def line(self, head: dict[str, Any], text: str, calls: list[ToolCall], done: dict[str, Any] | None) -> A:
        """One body: ``text`` (and ``calls``), and ``done``'s fields if it is the last."""

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
        return self.line(head, answer.text, answer.tool_calls, self.timings(answer))

    def opening(self, head: dict[str, Any]) -> list[str]:
        return []

    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> list[str]:
        if not chunk.text and not chunk.tool_calls:
            return []
        return [json_line(self.line(head, chunk.text, chunk.tool_calls, None))]

    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]:
        return [json_line(self.line(head, "", [], self.timings(answer)))]

    def failure(self, head: dict[str, Any], error: APIError) -> list[str]:
        return [json_line(error_body(error))]


class ChatShape(AnswerShape[ChatResponse]):
    def line(self, head: dict[str, Any], text: str, calls: list[ToolCall], done: dict[str, Any] | None) -> ChatResponse:
        message = AssistantMessage(role="assistant", content=text)
        if calls:
            message.tool_calls = [tool_call_body(i, call) for i, call in enumerate(calls)]
        return ChatResponse(model=head["model"], created_at=now(), message=message, **(done or {"done": False}))


class GenerateShape(AnswerShape[GenerateResponse]):
    def line(self, head: dict[str, Any], text: str, calls: list[ToolCall], done: dict[str, Any] | None) -> GenerateResponse:
        return GenerateResponse(model=head["model"], created_at=now(), response=text, **(done or {"done": False}))


async def loaded_session(state: ServiceState, body: GenerationRequest) -> tuple[Session, int]:
    """The session once the model has loaded, and the nanoseconds this
    request waited for it; then ``body``'s model must be the served one."""
    started = time.monotonic()
    timeout = state.config.server.request_timeout
    while state.session is None and state.load_error is None and (timeout is None or time.monotonic() - started < timeout):
        await asyncio.sleep(LOAD_POLL_S)
    session = state.ready_session()
    serving.check_model_name(state, served_name(state, body.model))
    if body.unloads:
        raise APIError(400, "keep_alive: 0 asks to unload the model, but this service keeps its one model loaded while it runs", param="keep_alive")
    return session, nanoseconds(time.monotonic() - started)


async def chat(state: ServiceState, body: ChatRequest, conversation_id: str | None) -> Reply[ChatResponse] | ChatResponse:
    """A `Reply` to run for ``body``, or, with no messages, the loaded model's answer."""
    _, waited = await loaded_session(state, body)
    if not body.messages:
        message = AssistantMessage(role="assistant", content="")
        return ChatResponse(model=state.model_id, created_at=now(), message=message, done=True, done_reason="load", load_duration=waited)
    request = body.openai_request(state.model_id)
    shape = ChatShape(waited)
    return await serving.chat_reply(state, request, conversation_id, lambda _: shape, id_prefix=ID_PREFIX, unlimited=body.options.unlimited)


async def generate(state: ServiceState, body: GenerateRequest, conversation_id: str | None) -> Reply[GenerateResponse] | GenerateResponse:
    """A `Reply` to run for ``body`` (a raw prompt is continued as it is), or,
    with an empty prompt, the loaded model's answer."""
    _, waited = await loaded_session(state, body)
    if not body.prompt:
        return GenerateResponse(model=state.model_id, created_at=now(), response="", done=True, done_reason="load", load_duration=waited)
    shape, unlimited = GenerateShape(waited), body.options.unlimited
    if body.raw:
        request = body.completion_request(state.model_id)
        return serving.completion_reply(state, request, shape, id_prefix=ID_PREFIX, default_max_tokens=None, unlimited=unlimited)
    return await serving.chat_reply(
        state, body.chat_request(state.model_id), conversation_id, lambda _: shape, id_prefix=ID_PREFIX, unlimited=unlimited
    )
