"""OpenAI's chat and text completions on the serving layer: their bodies for
a serving `Reply`, `ChatCompletionShape` (chat completions) and
`CompletionShape` (text completions), whole or streamed as server-sent
events, with ``n`` answers to one request (their ``choices``), and their
usage."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from ..._core import ChatChunk, TokenLogprob, Usage
from ...collect import StreamedAnswer
from ...tools import tool_call_body
from ..api_error import APIError
from ..reply import Reply
from ..serving import chat_reply, completion_reply
from ..state import ServiceState
from ..stream_text import SERVER_SENT_EVENTS, event
from .bodies import (
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
from .logprobs import CompletionLogprobWriter, chat_logprobs
from .requests import ChatCompletionRequest, CompletionRequest

# OpenAI's max_tokens for a text completion that sets none (and no config default).
COMPLETION_MAX_TOKENS = 16
# The whole body of a chat or a text completion.
B = TypeVar("B", ChatCompletion, Completion)


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


class OpenAIStream(ABC, Generic[B]):
    """What chat and text completions share: ``n`` answers to one request
    (choices with their index: the shape is its own `choices`), the usage
    when asked (``stream_options.include_usage``) then ``[DONE]`` at the end
    of a stream, and an error as one event."""

    media_type = SERVER_SENT_EVENTS

    def __init__(self, body: ChatCompletionRequest | CompletionRequest) -> None:
        self.include_usage = body.stream_options is not None and body.stream_options.include_usage

    @property
    def choices(self) -> OpenAIStream[B]:
        """This shape, which writes a request's several answers as the choices of one body or stream."""
        return self

    @abstractmethod
    def whole(self, head: dict[str, Any], answer: StreamedAnswer, index: int = 0) -> B: ...

    @abstractmethod
    def opening(self, head: dict[str, Any], index: int = 0) -> list[str]: ...

    @abstractmethod
    def chunk(self, head: dict[str, Any], chunk: ChatChunk, index: int = 0) -> list[str]: ...

    @abstractmethod
    def usage(self, head: dict[str, Any], usage: UsageBody) -> BaseModel: ...

    def whole_choices(self, head: dict[str, Any], answers: Sequence[StreamedAnswer]) -> B:
        """One body with every answer as a choice, and the request's usage."""
        bodies = [self.whole(head, answer, index) for index, answer in enumerate(answers)]
        return bodies[0].model_copy(update={"choices": [body.choices[0] for body in bodies], "usage": total_usage(answers)})

    def closing(self, head: dict[str, Any], answer: StreamedAnswer) -> list[str]:
        return self.closing_choices(head, [answer])

    def closing_choices(self, head: dict[str, Any], answers: Sequence[StreamedAnswer]) -> list[str]:
        usage: UsageBody | None = total_usage(answers)
        return [*([event(self.usage(head, usage))] if self.include_usage and usage is not None else []), "data: [DONE]\n\n"]

    def failure(self, head: dict[str, Any], error: APIError) -> list[str]:
        return [event(error.body())]


def total_usage(answers: Sequence[StreamedAnswer]) -> UsageBody | None:
    """The usage of a request's answers: its prompt once, every answer's tokens."""
    usages = [answer.usage for answer in answers if answer.usage is not None]
    if not usages or len(usages) < len(answers):
        return None
    return usage_body(usages[0], completion_tokens=sum(usage.completion_tokens for usage in usages))


class ChatCompletionShape(OpenAIStream[ChatCompletion]):
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
        if answer.reasoning:
            message.reasoning_content = message.reasoning = answer.reasoning
        logprobs = chat_logprobs(answer.logprobs) if self.logprobs else None
        choice = ChatChoice(index=index, message=message, finish_reason=answer.finish_reason, logprobs=logprobs)
        return ChatCompletion(**head, object="chat.completion", choices=[choice], usage=usage_body(answer.usage))

    def opening(self, head: dict[str, Any], index: int = 0) -> list[str]:
        choice = ChunkChoice(index=index, delta=Delta(role="assistant", content=""), finish_reason=None)
        return [event(ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[choice]))]

    def chunk(self, head: dict[str, Any], chunk: ChatChunk, index: int = 0) -> list[str]:
        delta = Delta(content=chunk.text) if chunk.text else Delta()
        if chunk.reasoning:
            delta.reasoning_content = delta.reasoning = chunk.reasoning
        if chunk.tool_calls:
            delta.tool_calls = [ToolCallDelta.model_validate({"index": i, **tool_call_body(call)}) for i, call in enumerate(chunk.tool_calls)]
        choice = ChunkChoice(index=index, delta=delta, finish_reason=chunk.finish_reason)
        if self.logprobs:
            choice.logprobs = chat_logprobs(chunk.logprobs)
        return [event(ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[choice]))]

    def usage(self, head: dict[str, Any], usage: UsageBody) -> ChatCompletionChunk:
        return ChatCompletionChunk(**head, object="chat.completion.chunk", choices=[], usage=usage)


class CompletionShape(OpenAIStream[Completion]):
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


async def chat_completion(state: ServiceState, body: ChatCompletionRequest, conversation_id: str | None) -> Reply[ChatCompletion]:
    """A chat request answered in OpenAI's bodies (see `chat_reply`)."""
    return await chat_reply(state, body, conversation_id, lambda _: ChatCompletionShape(body), id_prefix="chatcmpl-")


async def completion(state: ServiceState, body: CompletionRequest) -> Reply[Completion]:
    """A text-completion request answered in OpenAI's bodies (see `completion_reply`)."""
    return await completion_reply(state, body, CompletionShape(body), id_prefix="cmpl-", default_max_tokens=COMPLETION_MAX_TOKENS)
