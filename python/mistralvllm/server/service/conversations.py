"""`/v1/conversations`: the history the CLI and the web page share."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Query

from ...history import ConversationNotFoundError
from ..api_error import APIError
from ..deps import Service, require_key
from ..openai.bodies import ErrorBody
from ..stored_conversation import history_writes
from .bodies import ConversationDetail, ConversationList, Deleted, Renamed
from .requests import RenameRequest

router = APIRouter(prefix="/v1/conversations", dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorBody}})


# The history is looked up in each route, not as a dependency, so that a bad
# request is answered 400 before a service without history answers 404. A
# history database that fails is a 503 (507 for a write), as in the chat routes.
@router.get("", response_model=ConversationList)
async def conversations(state: Service, limit: int = Query(50, ge=1, le=1000)) -> ConversationList:
    store = state.require_history()
    return ConversationList(data=history_writes(lambda: store.list(limit=limit)))


@router.get("/{conversation_id}", response_model=ConversationDetail)
async def conversation(conversation_id: str, state: Service) -> ConversationDetail:
    store = state.require_history()
    try:
        summary = history_writes(lambda: store.show(conversation_id))
        return ConversationDetail(**asdict(summary), messages=history_writes(lambda: store.messages(summary.id)))
    except ConversationNotFoundError as e:
        raise APIError(404, str(e), code="conversation_not_found") from None


@router.patch("/{conversation_id}", response_model=Renamed)
async def rename_conversation(conversation_id: str, body: RenameRequest, state: Service) -> Renamed:
    store = state.require_history()
    try:
        history_writes(lambda: store.rename(conversation_id, body.title))
    except ConversationNotFoundError as e:
        raise APIError(404, str(e), code="conversation_not_found") from None
    return Renamed(id=conversation_id, title=body.title)


@router.delete("/{conversation_id}", response_model=Deleted)
async def delete_conversation(conversation_id: str, state: Service) -> Deleted:
    store = state.require_history()
    try:
        history_writes(lambda: store.delete(conversation_id))
    except ConversationNotFoundError as e:
        raise APIError(404, str(e), code="conversation_not_found") from None
    return Deleted(id=conversation_id)
