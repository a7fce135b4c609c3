"""`/v1/responses`: OpenAI's Responses API (create, retrieve, delete)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..deps import Service, require_key
from ..http_reply import send
from ..openai.bodies import ErrorBody
from . import serving
from .bodies import DeletedResponse, ResponseObject
from .requests import ResponseRequest

router = APIRouter(prefix="/v1/responses", dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorBody}, "5XX": {"model": ErrorBody}})


@router.post("", response_model=ResponseObject)
async def create_response(body: ResponseRequest, request: Request, response: Response, state: Service) -> ResponseObject | Response:
    """A response, whole or streamed as server-sent events (``stream``);
    stored in the history under its id unless ``store`` is false."""
    reply = await serving.create_response(state, body)
    return await send(reply, request, response)


@router.get("/{response_id}", response_model=ResponseObject)
async def get_response(response_id: str, state: Service) -> ResponseObject:
    """A stored response, read back from the history."""
    return serving.stored_response(state, response_id)


@router.delete("/{response_id}", response_model=DeletedResponse)
async def delete_response(response_id: str, state: Service) -> DeletedResponse:
    """Delete a stored response (its conversation in the history)."""
    return serving.delete_response(state, response_id)
