"""The service's own routes: health, Prometheus metrics, the model list, and
the web chat page."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...errors import MistralVllmError
from ..deps import Service, require_key
from ..model_pool import ServedModel
from ..openai.bodies import ErrorBody
from .bodies import Health, ModelCard, ModelList, ModelStatus

STATIC = resources.files("mistralvllm.server") / "static"

router = APIRouter()


def model_status(model: ServedModel) -> ModelStatus:
    try:
        size: int | None = model.size_bytes
    except MistralVllmError:
        size = None
    expires = model.expires_at if model.session is not None and model.leases == 0 else None
    return ModelStatus(
        name=model.name,
        aliases=model.entry.aliases,
        loaded=model.session is not None,
        size=size,
        expires_at=None if expires is None else datetime.fromtimestamp(expires, timezone.utc).isoformat(),
        requests=model.leases,
        error=model.load_error,
    )


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(state: Service) -> JSONResponse:
    """``ok`` once the start-up model has loaded; 503 while it loads or after
    it failed to. Every configured model's status comes with it."""
    first, models = state.models.first, [model_status(model) for model in state.models.models]
    if state.models.startup_done and first.load_error is None:
        return JSONResponse(Health(status="ok", model=state.model_id, models=models).model_dump(exclude_none=True))
    status = "failed" if first.load_error else "loading"
    return JSONResponse(Health(status=status, error=first.load_error, models=models).model_dump(exclude_none=True), status_code=503)


@router.get("/metrics", dependencies=[Depends(require_key)], response_class=Response, responses={401: {"model": ErrorBody}})
async def metrics(state: Service) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/models", dependencies=[Depends(require_key)], response_model=ModelList, responses={"4XX": {"model": ErrorBody}, 503: {"model": ErrorBody}}
)
async def models(state: Service) -> ModelList:
    """Every configured model, loaded or not (each loads on its first request)."""
    return ModelList(data=[ModelCard(id=name) for name in state.models.names()])


# HEAD too: Ollama's clients probe the address with it before anything else.
@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")
