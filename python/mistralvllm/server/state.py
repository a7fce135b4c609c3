"""`ServiceState`: the served models (`ModelPool`), and what the routes
share (config, history, metrics)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..config import Config
from ..history import HistoryStore, open_history
from ..session import Session
from .api_error import APIError
from .metrics import ServiceMetrics
from .model_pool import ModelLease, ModelPool


class ServiceState:
    """The configured models, each loaded while in use (the first at start-up)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # The settings that shape answers (`Config.digest`): stored with each
        # conversation and sent as `system_fingerprint`; computed once.
        self.config_digest = config.digest()
        self.models = ModelPool(config)
        self.history = open_history(config.history) if config.history.enabled else None
        self.metrics = ServiceMetrics(lambda: [(model.name, model.session) for model in self.models.loaded() if model.session is not None])

    @property
    def model_id(self) -> str:
        """The first configured model's name (the one loaded at start-up)."""
        return self.models.first.name

    async def use(self, model: str | None, *, wait_for_startup: bool = False) -> ModelLease:
        """A lease on the model a request names (None: the first one), kept
        loaded ``server.keep_alive`` after the request (`ModelPool.use`)."""
        return await self.models.use(model, self.config.server.keep_alive_s, wait_for_startup=wait_for_startup)

    @asynccontextmanager
    async def session_for(self, model: str | None, *, wait_for_startup: bool = False) -> AsyncIterator[Session]:
        """The session of the model a request names, held loaded while in use."""
        lease = await self.use(model, wait_for_startup=wait_for_startup)
        try:
            yield lease.session
        finally:
            lease.release()

    def require_history(self) -> HistoryStore:
        if self.history is None:
            raise APIError(404, "history is off in this service's config", code="history_disabled")
        return self.history
