"""The texts a streamed answer is sent as: server-sent events (OpenAI's,
Anthropic's) and JSON lines (Ollama's), each holding one body as JSON."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

# The media type of a stream of server-sent events.
SERVER_SENT_EVENTS = "text/event-stream"


def body_json(body: BaseModel | dict[str, Any]) -> str:
    """``body`` as JSON on one line; a response body sends the fields it was built with."""
    return json.dumps(body.model_dump(exclude_unset=True) if isinstance(body, BaseModel) else body)


def event(body: BaseModel | dict[str, Any], name: str | None = None) -> str:
    """One server-sent event (with an ``event:`` line if ``name`` is given)."""
    return (f"event: {name}\n" if name else "") + f"data: {body_json(body)}\n\n"


def json_line(body: BaseModel | dict[str, Any]) -> str:
    """One line of a JSON-lines stream (Ollama's)."""
    return body_json(body) + "\n"
