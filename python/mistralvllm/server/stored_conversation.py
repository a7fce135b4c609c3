"""Where a request's question and answer are stored: the conversation it
belongs to (``X-Conversation-Id`` or ``user``), and history errors answered
as the service's (507 for a failed write, 503 for a database out of reach)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from ..history import Conversation, ConversationExistsError, HistoryDatabaseError, HistoryError, HistoryWriteError
from .api_error import APIError
from .model_pool import ServedModel
from .openai.requests import ChatCompletionRequest
from .state import ServiceState

log = logging.getLogger("mistralvllm.server")
T = TypeVar("T")


def history_writes(call: Callable[[], T]) -> T:
    """Run ``call``, answering a history write that failed (e.g. a full disk)
    with 507, and a history database that cannot be reached (e.g. a PostgreSQL
    server that is down) with 503."""
    try:
        return call()
    except HistoryWriteError as e:
        log.error("history write failed: %s", e)
        raise APIError(507, str(e), type="server_error", code="history_write_failed") from None
    except HistoryDatabaseError as e:
        log.error("history unavailable: %s", e)
        raise APIError(503, str(e), type="service_unavailable", code="history_unavailable") from None


def find_conversation(state: ServiceState, conversation_id: str | None, body: ChatCompletionRequest, model: ServedModel) -> Conversation | None:
    """The stored conversation a request to ``model`` belongs to (``X-Conversation-Id`` or ``user``)."""
    conversation_id = conversation_id or body.user
    history = state.history
    if not conversation_id or history is None:
        return None
    system = next((m.text() for m in body.messages if m.role == "system"), None)

    def find() -> Conversation:
        if not history.exists(conversation_id):
            try:
                return history.new(model=model.model_id, config_digest=state.config_digest, system_prompt=system, conversation_id=conversation_id)
            except ConversationExistsError:
                pass  # another request (or another service sharing the history) made it just now
        conversation = history.resume(conversation_id)
        if system is not None and system != conversation.system_prompt:
            conversation.set_system_prompt(system)
        return conversation

    try:
        return history_writes(find)
    except HistoryError as e:
        raise APIError(400, str(e), param="X-Conversation-Id") from None
