"""`/v1/conversations`: the history the CLI and the web page share."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Query

from ...history import HistoryError
from ..api_error import APIError
from ..deps import Service, require_key
from ..openai_requests import RenameRequest
from ..openai_responses import ConversationDetail, ConversationList, Deleted, ErrorBody, Renamed

router = APIRouter(prefix="/v1/conversations", dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorBody}})


# The history is looked up in each route, not as a dependency, so that a bad
# request is answered 400 before a service without history answers 404.
@router.get("", response_model=ConversationList)
async def conversations(state: Service, limit: int = Query(50, ge=1, le=1000)) -> ConversationList:
    return ConversationList(data=state.require_history().list(limit=limit))


@router.get("/{conversation_id}", response_model=ConversationDetail)
async def conversation(conversation_id: str, state: Service) -> ConversationDetail:
    store = state.require_history()
    try:
        summary = store.show(conversation_id)
    except HistoryError as e:
        raise APIError(404, str(e), code="conversation_not_found") from None
    return ConversationDetail(**asdict(summary), messages=store.messages(summary.id))


@router.patch("/{conversation_id}", response_model=Renamed)
async def rename_conversation(conversation_id: str, body: RenameRequest, state: Service) -> Renamed:
    try:
        state.require_history().rename(conversation_id, body.title)
    except HistoryError as e:
        raise APIError(404, str(e), code="conversation_not_found") from None
    return Renamed(id=conversation_id, title=body.title)


@router.delete("/{conversation_id}", response_model=Deleted)
async def delete_conversation(conversation_id: str, state: Service) -> Deleted:
    try:
        state.require_history().delete(conversation_id)
    except HistoryError as e:
        raise APIError(404, str(e), code="conversation_not_found") from None
    return Deleted(id=conversation_id)
