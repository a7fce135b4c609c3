"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from .. import serving
from ..deps import Service, require_key
from ..openai_requests import CompletionRequest
from ..openai_responses import Completion, ErrorBody
from .reply import send

router = APIRouter(dependencies=[Depends(require_key)], responses={"4XX": {"model": ErrorBody}, "5XX": {"model": ErrorBody}})


@router.post("/v1/completions", response_model=Completion, response_model_exclude_unset=True)
async def completions(body: CompletionRequest, request: Request, response: Response, state: Service) -> Completion | Response:
    """The continuation of raw text (no chat template), whole or streamed."""
    return await send(await serving.completion(state, body), request, response)
