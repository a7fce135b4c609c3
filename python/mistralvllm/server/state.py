"""`ServiceState`: the session being loaded or loaded, and what the routes
share (config, history, metrics)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Config
from ..errors import MistralVllmError
from ..history import ChatHistory
from ..session import Session
from .api_error import APIError
from .metrics import ServiceMetrics

log = logging.getLogger("mistralvllm.server")


def served_model_name(model_path: str) -> str:
    """The name the service gives the model at ``model_path`` (its file name without ``.gguf``)."""
    return Path(model_path).name.removesuffix(".gguf")


class ServiceState:
    """One `Session` for every request, loaded in the background at start-up."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.session: Session | None = None
        self.load_error: str | None = None
        self.model_id = "loading"
        self.history = ChatHistory(config.history.path) if config.history.enabled else None
        self.metrics = ServiceMetrics(
            lambda: self.session.sequence_counts() if self.session else None,
            lambda: self.session.engine_stats() if self.session else None,
            lambda: self.model_id,
        )

    def load(self) -> None:
        try:
            session = Session(**self.config.session_options())
        except MistralVllmError as e:
            self.load_error = str(e)
            log.error("model failed to load: %s", e)
            return
        self.model_id = served_model_name(session.info()["model"])
        self.session = session
        log.info("model %s loaded (%s)", self.model_id, session.info()["device"])

    def ready_session(self) -> Session:
        if self.session is None:
            message = f"the model failed to load: {self.load_error}" if self.load_error else "the model is still loading"
            raise APIError(503, message, type="service_unavailable", code="model_not_ready")
        return self.session

    def require_history(self) -> ChatHistory:
        if self.history is None:
            raise APIError(404, "history is off in this service's config", code="history_disabled")
        return self.history
