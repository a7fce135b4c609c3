"""OpenAI's Responses API on the serving layer.

A `ResponseRequest` becomes chat messages (after the stored conversation of
its ``previous_response_id``) and a `Reply` like any chat request; its
`ResponseShape` answers with a Response object, or streams the events that
OpenAI's clients accumulate into one. Each stored response is a conversation
in the history under its ``resp_...`` id, holding the conversation before it,
its input and its answer: that is what a later ``previous_response_id``
continues and what `GET /v1/responses/{id}` reads back.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from ..._core import ChatChunk
from ...collect import StreamedAnswer
from ...history import ConversationNotFoundError, ConversationSummary, StoredMessage, Turn
from ...images import content_images, content_text
from ...models import served_model_name
from ...tools import messages_for_engine
from ..api_error import APIError
from ..model_pool import ServedModel
from ..reply import Reply
from ..serving import check_model, fitted_sampling, held, reply_id, request_images
from ..state import ServiceState
from ..stored_conversation import history_writes
from ..stream_text import SERVER_SENT_EVENTS, event
from .bodies import (
    DeletedResponse,
    IncompleteDetails,
    InputTokensDetails,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputReasoning,
    OutputText,
    ReasoningText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
)
from .requests import ResponseRequest

RESPONSE_ID_PREFIX = "resp_"
ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]
# A finished answer that ends for another reason is incomplete.
COMPLETED_REASONS = ("stop", "tool_calls")


def message_id(response_id: str) -> str:
    """The id of response ``response_id``'s message. Item ids derive from the
    response's, so that a stored response reads back the same."""
    return f"msg_{response_id.removeprefix(RESPONSE_ID_PREFIX)}"


def reasoning_id(response_id: str) -> str:
    """The id of response ``response_id``'s reasoning item."""
    return f"rs_{response_id.removeprefix(RESPONSE_ID_PREFIX)}"


def output_items(response_id: str, text: str, calls: list[tuple[str, str]], *, finish_reason: str | None, reasoning: str = "") -> list[OutputItem]:
    """The output of response ``response_id``: a thinking model's reasoning,
    its text as a message (unless it only called functions), then each
    (name, arguments) call."""
    serial = response_id.removeprefix(RESPONSE_ID_PREFIX)
    status = "completed" if finish_reason in COMPLETED_REASONS else "incomplete"
    items: list[OutputItem] = []
    if reasoning:
        items.append(OutputReasoning(id=reasoning_id(response_id), status=status, content=[ReasoningText(text=reasoning)]))
    if text or not calls:
        items.append(OutputMessage(id=message_id(response_id), status=status, content=[OutputText(text=text)]))
    for i, (name, arguments) in enumerate(calls):
        items.append(OutputFunctionCall(id=f"fc_{serial}_{i}", call_id=f"call_{serial}_{i}", name=name, arguments=arguments, status=status))
    return items


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def canonical_arguments(arguments: str) -> str:
    """A call's arguments as stored calls are written back (`tools.calls_as_text`)."""
    try:
        return json_text(json.loads(arguments))
    except json.JSONDecodeError:
        return arguments


def stored_calls(written: str) -> list[tuple[str, str]]:
    """The (name, arguments) calls of an answer stored as the JSON the model wrote."""
    try:
        calls = json.loads(written)
    except json.JSONDecodeError:
        return []
    calls = calls if isinstance(calls, list) else [calls]
    return [(str(call.get("name")), json_text(call.get("arguments", {}))) for call in calls if isinstance(call, dict)]


def response_status(finish_reason: str | None) -> tuple[ResponseStatus, IncompleteDetails | None]:
    if finish_reason in COMPLETED_REASONS:
        return "completed", None
    return "incomplete", IncompleteDetails(reason="max_output_tokens" if finish_reason == "length" else None)


def request_settings(body: ResponseRequest) -> dict[str, Any]:
    """The request's settings a Response object repeats."""
    choice = body.tool_choice or "auto"
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "text": body.text.model_dump(by_alias=True, exclude_none=True) if body.text else {"format": {"type": "text"}},
        "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
    }


class ResponseShape:
    """Responses' bodies: the Response object when whole; when streamed, the
    lifecycle events (created, in_progress, then completed, incomplete or
    failed) around the output items' events, numbered in order."""

    media_type = SERVER_SENT_EVENTS
    choices = None  # one answer to a request: no n

    def __init__(self, body: ResponseRequest) -> None:
        self.settings = request_settings(body)
        self.sequence = 0
        self.message_open = False
        self.reasoning_open = False  # the reasoning item (output 0) was started

    def response(self, head: dict[str, Any], status: ResponseStatus, output: list[OutputItem], **fields: Any) -> ResponseObject:
        """The Response object of this request, with ``fields`` (usage, error, ...) that are known."""
        return ResponseObject(id=head["id"], created_at=head["created"], model=head["model"], status=status, output=output, **self.settings, **fields)

    def whole(self, head: dict[str, Any], answer: StreamedAnswer) -> ResponseObject:
        calls = [(call.name, canonical_arguments(call.arguments)) for call in answer.tool_calls]
        status, incomplete = response_status(answer.finish_reason)
        usage = answer.usage
        return self.response(
            head,
            status,
            output_items(head["id"], answer.text, calls, finish_reason=answer.finish_reason, reasoning=answer.reasoning),
            incomplete_details=incomplete,
            usage=ResponseUsage(
                input_tokens=usage.prompt_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_prompt_tokens),
                output_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
            )
            if usage
            else None,
        )

    def event(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event(data, kind)

    def opening(self, head: dict[str, Any]) -> list[str]:
        response = self.response(head, "in_progress", [], usage=None).model_dump(mode="json")
        return [self.event("response.created", response=response), self.event("response.in_progress", response=response)]

    @property
    def message_index(self) -> int:
        """The message item's place in the output: after the reasoning, if any."""
        return 1 if self.reasoning_open else 0

    def _open_message(self, head: dict[str, Any]) -> list[str]:
        """The message item's first events."""
        self.message_open = True
        message = OutputMessage(id=message_id(head["id"]), status="in_progress", content=[])
        part = OutputText(text="").model_dump(mode="json")
        index = self.message_index
        return [
            self.event("response.output_item.added", output_index=index, item=message.model_dump(mode="json")),
            self.event("response.content_part.added", item_id=message.id, output_index=index, content_index=0, part=part),
        ]

    def _open_reasoning(self, head: dict[str, Any]) -> list[str]:
        """The reasoning item's first events (output item 0: the reasoning comes first)."""
        self.reasoning_open = True
        item = OutputReasoning(id=reasoning_id(head["id"]), status="in_progress", content=[])
        part = ReasoningText(text="").model_dump(mode="json")
        return [
            self.event("response.output_item.added", output_index=0, item=item.model_dump(mode="json")),
            self.event("response.content_part.added", item_id=item.id, output_index=0, content_index=0, part=part),
        ]

    def chunk(self, head: dict[str, Any], chunk: ChatChunk) -> list[str]:
        events: list[str] = []
        if chunk.reasoning and not self.message_open:
            events += [] if self.reasoning_open else self._open_reasoning(head)
            place = {"item_id": reasoning_id(head["id"]), "output_index": 0, "content_index": 0}
            events.append(self.event("response.reasoning_text.delta", **place, delta=chunk.reasoning))
        if chunk.text:
            events += [] if self.message_open else self._open_message(head)
            place = {"item_id": message_id(head["id"]), "output_index": self.message_index, "content_index": 0}
            events.append(self.event("response.output_text.delta", **place, delta=chunk.text, logprobs=[]))
        return events

    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]:
        whole = self.whole(head, answer)
        events: list[str] = []
        for index, item in enumerate(whole.output):
            done = item.model_dump(mode="json")
            if isinstance(item, OutputReasoning):
                events += [] if self.reasoning_open else self._open_reasoning(head)
                part = item.content[0].model_dump(mode="json")
                place = {"item_id": item.id, "output_index": index, "content_index": 0}
                events.append(self.event("response.reasoning_text.done", **place, text=part["text"]))
                events.append(self.event("response.content_part.done", **place, part=part))
            elif isinstance(item, OutputMessage):
                events += [] if self.message_open else self._open_message(head)
                part = item.content[0].model_dump(mode="json")
                place = {"item_id": item.id, "output_index": index, "content_index": 0}
                events.append(self.event("response.output_text.done", **place, text=part["text"], logprobs=[]))
                events.append(self.event("response.content_part.done", **place, part=part))
            else:
                added = done | {"arguments": "", "status": "in_progress"}
                place = {"item_id": item.id, "output_index": index}
                events.append(self.event("response.output_item.added", output_index=index, item=added))
                events.append(self.event("response.function_call_arguments.delta", **place, delta=item.arguments))
                events.append(self.event("response.function_call_arguments.done", **place, arguments=item.arguments))
            events.append(self.event("response.output_item.done", output_index=index, item=done))
        kind = "response.completed" if whole.status == "completed" else "response.incomplete"
        return [*events, self.event(kind, response=whole.model_dump(mode="json"))]

    def failure(self, head: dict[str, Any], error: APIError) -> list[str]:
        """An ``error`` event, then the response as failed."""
        reason = ResponseError(code="server_error" if error.status >= 500 else "invalid_prompt", message=error.message)
        failed = self.response(head, "failed", [], usage=None, error=reason).model_dump(mode="json")
        return [
            self.event("error", code=error.code or error.type, message=error.message, param=error.param),
            self.event("response.failed", response=failed),
        ]


def find_stored(state: ServiceState, response_id: str, *, param: str | None = None) -> tuple[ConversationSummary, list[StoredMessage]]:
    """The stored conversation of response ``response_id`` and its messages
    (the last one its answer); 404 naming the id if there is none."""
    history = state.history

    def find() -> tuple[ConversationSummary, list[StoredMessage]] | None:
        if history is None or not response_id.startswith(RESPONSE_ID_PREFIX) or not history.exists(response_id):
            return None
        try:
            messages = history.messages(response_id)
            summary = history.show(response_id)
        except ConversationNotFoundError:  # deleted just now (by another request or service)
            return None
        return (summary, messages) if len(messages) >= 2 and messages[-1].role == "assistant" else None

    if (found := history_writes(find)) is not None:
        return found
    where = "" if history is not None else " (history is off in this service's config, so no response is stored)"
    what = "previous response" if param == "previous_response_id" else "response"
    code = "previous_response_not_found" if param == "previous_response_id" else "response_not_found"
    raise APIError(404, f"{what} with id {response_id!r} not found{where}", param=param, code=code)


def begin_stored_turn(state: ServiceState, model: ServedModel, body: ResponseRequest, response_id: str, messages: list[StoredMessage]) -> Turn | None:
    """Store a new conversation under ``response_id``: ``messages`` (the
    conversation before, then the input), its last one as the question."""
    history = state.history
    if history is None or not body.store:
        return None
    *preceding, question = messages
    conversation = history_writes(
        lambda: history.new(
            model=model.model_id, config_digest=state.config_digest, system_prompt=body.instructions or None, conversation_id=response_id
        )
    )
    return history_writes(lambda: conversation.begin_turn(question.content, images=question.images, role=question.role, preceding=preceding))


async def create_response(state: ServiceState, body: ResponseRequest) -> Reply[ResponseObject]:
    """Check a Responses request, put its conversation together and fit it
    to the context window: a `Reply` ready to run, stored unless ``store`` is false."""
    lease = await check_model(state, body)
    session = lease.session

    async def build() -> Reply[ResponseObject]:
        earlier = find_stored(state, body.previous_response_id, param="previous_response_id")[1] if body.previous_response_id else []
        now = time.time()
        given = await request_images(state, lease, messages_for_engine(body.input_messages()), param="input")
        inputs = [StoredMessage(m["role"], content_text(m["content"]), now, images=tuple(content_images(m["content"]))) for m in given]
        instructions = [{"role": "system", "content": body.instructions}] if body.instructions else []
        messages = [*instructions, *(m.as_request() for m in [*earlier, *inputs])]
        sampling, _ = await fitted_sampling(state, session, body, messages)
        response_id = reply_id(RESPONSE_ID_PREFIX)
        turn = begin_stored_turn(state, lease.model, body, response_id, [*earlier, *inputs])
        tools = body.tool_options()
        return Reply(state, lease, body, lambda: session.start(messages, sampling, **tools), ResponseShape(body), id=response_id, turn=turn)

    return await held(lease, build)


def stored_response(state: ServiceState, response_id: str) -> ResponseObject:
    """A stored response read back from its conversation. The request's
    settings other than ``instructions`` are not stored, so they read as
    their defaults; an answer that never finished reads as incomplete."""
    summary, messages = find_stored(state, response_id)
    question, answer = messages[-2:]
    calls = stored_calls(answer.content) if answer.finish_reason == "tool_calls" else []
    text = "" if calls else answer.content
    status, incomplete = response_status(answer.finish_reason)
    usage = None
    if question.prompt_tokens is not None and answer.completion_tokens is not None:
        usage = ResponseUsage(
            input_tokens=question.prompt_tokens,
            output_tokens=answer.completion_tokens,
            total_tokens=question.prompt_tokens + answer.completion_tokens,
        )
    return ResponseObject(
        id=summary.id,
        created_at=int(summary.created),
        model=served_model_name(summary.model) if summary.model else state.model_id,
        status=status,
        incomplete_details=incomplete,
        output=output_items(summary.id, text, calls, finish_reason=answer.finish_reason),
        usage=usage,
        instructions=summary.system_prompt,
    )


def delete_response(state: ServiceState, response_id: str) -> DeletedResponse:
    find_stored(state, response_id)
    store = state.require_history()
    history_writes(lambda: store.delete(response_id))
    return DeletedResponse(id=response_id)
