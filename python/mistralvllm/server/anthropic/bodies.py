"""Response bodies of Anthropic's Messages API, as pydantic models (the
routes' ``response_model``s), the events that stream a message, and
Anthropic's error shape for every error under ``/v1/messages``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ..api_error import APIError

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingContent(BaseModel):
    """A thinking model's reasoning, before its answer (no signature: it is not sent back to be checked)."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class ToolUseContent(BaseModel):
    """A call of one of the request's tools, its input parsed."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class Message(BaseModel):
    """`POST /v1/messages`, answered whole (and, empty, in ``message_start``)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ThinkingContent | TextContent | ToolUseContent]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: MessageUsage


class TokenCount(BaseModel):
    """`POST /v1/messages/count_tokens`."""

    input_tokens: int


class ErrorObject(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    """Every error under ``/v1/messages``, in Anthropic's shape."""

    type: Literal["error"] = "error"
    error: ErrorObject


# Anthropic's error types by status; any other 4xx is an invalid request, any other 5xx an api_error.
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(error: APIError) -> dict[str, Any]:
    """``error`` in Anthropic's shape (``add_error_shape``'s shape, and the data of an ``error`` event)."""
    kind = ERROR_TYPES.get(error.status, "invalid_request_error" if error.status < 500 else "api_error")
    return ErrorResponse(error=ErrorObject(type=kind, message=error.message)).model_dump()
