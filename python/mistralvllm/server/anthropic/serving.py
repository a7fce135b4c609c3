"""Anthropic's Messages API on the serving layer: a request runs as the
OpenAI chat request it translates to (`server.serving.chat_reply`), and its
`MessageShape` answers with the whole `Message`, or the events that stream it.

A stream is ``message_start`` and ``ping``; then a content block per run of
thinking (a thinking model's reasoning) or text and one per tool call (``content_block_start``, its deltas,
``content_block_stop``); then ``message_delta`` with the stop reason and the
usage, and ``message_stop``. An error ends it as an ``error`` event.
"""

from __future__ import annotations

import json
from typing import Any

from ..._core import ChatChunk, ToolCall
from ...collect import StreamedAnswer
from ..api_error import APIError
from ..reply import Reply
from ..serving import chat_reply, check_model, prompt_tokens, refuse_unthinking
from ..state import ServiceState
from ..stream_text import SERVER_SENT_EVENTS, event
from .bodies import Message, MessageUsage, StopReason, TextContent, ThinkingContent, ToolUseContent, error_body
from .requests import CountTokensRequest, MessagesRequest

# The engine's finish reasons in Anthropic's words; "stop" is end_turn, or
# stop_sequence when the answer ended on one of the request's stop strings.
STOP_REASONS: dict[str, StopReason] = {"length": "max_tokens", "tool_calls": "tool_use"}
MESSAGE_ID_PREFIX = "msg_"


def stop_reason(answer: StreamedAnswer) -> StopReason:
    if answer.stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS.get(answer.finish_reason or "", "end_turn")


def tool_use(call: ToolCall) -> ToolUseContent:
    # The engine found the call as JSON and gives its arguments as a JSON object.
    return ToolUseContent(id=call.id, name=call.name, input=json.loads(call.arguments))


def message_event(kind: str, **fields: Any) -> str:
    """An event of Anthropic's stream: its type is both the ``event:`` name and the data's ``type``."""
    return event({"type": kind, **fields}, kind)


class MessageShape:
    """Anthropic's bodies for one reply, whose prompt takes ``prompt_tokens``
    (``message_start`` tells them before the answer's usage does). A new
    shape per reply: a stream counts the content blocks it has started."""

    media_type = SERVER_SENT_EVENTS
    choices = None  # one answer to a request: no n

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.blocks = 0  # content blocks started
        self.open_block: tuple[str, int] | None = None  # the kind ("thinking", "text") and index of the block being streamed

    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> Message:
        result = answer.result()
        content: list[ThinkingContent | TextContent | ToolUseContent] = [ThinkingContent(thinking=result.reasoning)] if result.reasoning else []
        content += [TextContent(text=result.text)] if result.text else []
        content += [tool_use(call) for call in result.tool_calls]
        usage = MessageUsage(input_tokens=result.usage.prompt_tokens, output_tokens=result.usage.completion_tokens)
        return Message(
            id=head["id"], content=content, model=head["model"], stop_reason=stop_reason(answer), stop_sequence=answer.stop_sequence, usage=usage
        )

    def opening(self, head: dict[str, Any]) -> list[str]:
        usage = MessageUsage(input_tokens=self.prompt_tokens, output_tokens=0)
        message = Message(id=head["id"], content=[], model=head["model"], stop_reason=None, stop_sequence=None, usage=usage)
        return [message_event("message_start", message=message.model_dump()), message_event("ping")]

    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> list[str]:
        events = []
        if chunk.reasoning:
            events += self._delta("thinking", ThinkingContent(thinking=""), {"type": "thinking_delta", "thinking": chunk.reasoning})
        if chunk.text:
            events += self._delta("text", TextContent(text=""), {"type": "text_delta", "text": chunk.text})
        for call in chunk.tool_calls:
            events += self._close_block()
            index = self.blocks
            events.append(self._start_block(ToolUseContent(id=call.id, name=call.name, input={}).model_dump()))
            events.append(message_event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": call.arguments}))
            events.append(message_event("content_block_stop", index=index))
        return events

    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]:
        usage = answer.result().usage
        delta = {"stop_reason": stop_reason(answer), "stop_sequence": answer.stop_sequence}
        return [
            *self._close_block(),
            message_event("message_delta", delta=delta, usage={"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}),
            message_event("message_stop"),
        ]

    def failure(self, head: dict[str, Any], error: APIError) -> list[str]:
        return [event(error_body(error), "error")]

    def _start_block(self, block: dict[str, Any]) -> str:
        self.blocks += 1
        return message_event("content_block_start", index=self.blocks - 1, content_block=block)

    def _delta(self, kind: str, empty: ThinkingContent | TextContent, delta: dict[str, str]) -> list[str]:
        """``delta`` in the open block of ``kind``, started (from ``empty``) if another is open or none."""
        events = []
        if self.open_block is None or self.open_block[0] != kind:
            events += self._close_block()
            self.open_block = (kind, self.blocks)
            events.append(self._start_block(empty.model_dump()))
        return [*events, message_event("content_block_delta", index=self.open_block[1], delta=delta)]

    def _close_block(self) -> list[str]:
        if self.open_block is None:
            return []
        (_, index), self.open_block = self.open_block, None
        return [message_event("content_block_stop", index=index)]


async def message(state: ServiceState, body: MessagesRequest, conversation_id: str | None) -> Reply[Message]:
    """A `Reply` to run for ``body``, as the chat request it translates to, in Anthropic's bodies."""
    request = body.chat_request()
    lease = await check_model(state, request)
    if body.thinking is not None and body.thinking.enabled:
        refuse_unthinking(lease, "thinking", "leave thinking out or set its type to 'disabled'")
    return await chat_reply(state, request, conversation_id, MessageShape, id_prefix=MESSAGE_ID_PREFIX, lease=lease)


async def input_tokens(state: ServiceState, body: CountTokensRequest) -> int:
    """The tokens ``body``'s prompt takes, as its answer's ``usage.input_tokens`` counts them."""
    return await prompt_tokens(state, body.chat_request())
