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
from .anthropic_responses import error_body as anthropic_error
from .exception_handlers import add_error_shape, add_exception_handlers
from .middleware import BodyLimit, JsonBodies, count_requests
from .ollama_serving import error_body as ollama_error
from .routes import chat, completions, conversations, messages, ollama, responses, system, tokens
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
    add_error_shape(app, messages.PREFIX, anthropic_error)
    add_error_shape(app, "/api/", ollama_error)
    routers = (chat.router, completions.router, responses.router, tokens.router, system.router, conversations.router, messages.router, ollama.router)
    for router in routers:
        app.include_router(router)
    return app
