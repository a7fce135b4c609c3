"""The FastAPI application: state, middleware, error handlers and routers.

Each configured model has its own `Session` while loaded (`ModelPool`); the
engine decodes a model's requests together (continuous batching).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..config import Config
from .anthropic import routes as anthropic_routes
from .anthropic.bodies import error_body as anthropic_error
from .exception_handlers import add_error_shape, add_exception_handlers
from .middleware import BodyLimit, JsonBodies, count_requests
from .ollama import routes as ollama_routes
from .ollama.bodies import error_body as ollama_error
from .openai import routes as openai_routes
from .responses import routes as responses_routes
from .service import conversations, system, tokens
from .state import ServiceState


def create_app(config: Config) -> FastAPI:
    """The service for ``config``; the first model loads in the background at start-up."""
    state = ServiceState(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.models.start()
        yield
        await state.models.stop()

    app = FastAPI(title="mistralvllm", version=__version__, lifespan=lifespan)
    app.state.service = state
    app.add_middleware(BodyLimit, limit=config.server.max_request_bytes)
    app.add_middleware(JsonBodies)
    app.middleware("http")(count_requests)
    add_exception_handlers(app)
    add_error_shape(app, anthropic_routes.PREFIX, anthropic_error)
    add_error_shape(app, "/api/", ollama_error)
    routers = (
        openai_routes.router,
        responses_routes.router,
        tokens.router,
        system.router,
        conversations.router,
        anthropic_routes.router,
        ollama_routes.router,
    )
    for router in routers:
        app.include_router(router)
    return app
