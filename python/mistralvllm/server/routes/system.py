"""The service's own routes: health, Prometheus metrics, the model list, and
the web chat page."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...session import Session
from ..deps import Service, ready_session, require_key
from ..openai_responses import ErrorBody, Health, ModelCard, ModelList

STATIC = resources.files("mistralvllm.server") / "static"

router = APIRouter()


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(state: Service) -> JSONResponse:
    """``ok`` once the model is loaded; 503 while it loads or after it failed to."""
    if state.session is not None:
        return JSONResponse(Health(status="ok", model=state.model_id).model_dump(exclude_unset=True))
    status = "failed" if state.load_error else "loading"
    return JSONResponse(Health(status=status, error=state.load_error).model_dump(exclude_unset=True), status_code=503)


@router.get("/metrics", dependencies=[Depends(require_key)], response_class=Response, responses={401: {"model": ErrorBody}})
async def metrics(state: Service) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/models", dependencies=[Depends(require_key)], response_model=ModelList, responses={"4XX": {"model": ErrorBody}, 503: {"model": ErrorBody}}
)
async def models(state: Service, _: Annotated[Session, Depends(ready_session)]) -> ModelList:
    return ModelList(data=[ModelCard(id=state.model_id)])


# HEAD too: Ollama's clients probe the address with it before anything else.
@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")
