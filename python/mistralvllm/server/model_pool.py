"""`ModelPool`: the service's configured models, loaded as Ollama loads them.

The first model loads at start-up; the others on their first request (the
requests for a model that is loading wait for that one load). A model
unloads once it has been idle for its ``keep_alive`` (the latest request's,
else ``server.keep_alive``), or when loading another would pass
``server.max_loaded_models`` or ``server.max_loaded_mem``: the least
recently used idle model goes first, never one with requests running (a
load waits for one to finish instead).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from .._core import inspect_model
from ..config import Config, ServedModelSection
from ..errors import MistralVllmError
from ..models import default_model_path
from ..session import Session
from .api_error import APIError

log = logging.getLogger("mistralvllm.server")
# How often idle models are checked against their keep_alive, and a load
# waiting for room checks again.
POLL_S = 0.05
# Ollama's clients send a model's name with a tag; ours have only ``latest``.
LATEST = ":latest"


@functools.cache
def model_facts(path: str | None) -> dict[str, Any]:
    """What the model's files say without loading it (`inspect_model`): format, architecture, layers, size."""
    return inspect_model(path or default_model_path())


@dataclass(eq=False)
class ServedModel:
    """One configured model: its session while loaded, and its requests."""

    entry: ServedModelSection
    session: Session | None = None
    load_error: str | None = None
    loading: asyncio.Future[None] | None = None
    # Loaded or being loaded: counted against the pool's bounds.
    resident: bool = False
    leases: int = 0
    last_used: float = 0.0
    keep_alive_s: float | None = None
    # Wall-clock time (time.time()) to unload at while idle; None: never.
    expires_at: float | None = None
    # What the loaded session says of itself (`Session.info`) that stays the
    # same while it is loaded, read once at load rather than per request.
    model_id: str = ""
    max_running_sequences: int = 0

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def size_bytes(self) -> int:
        """The model files' size, standing for its memory."""
        return int(model_facts(self.entry.path)["size_bytes"])


class ModelLease:
    """A request's hold on a loaded model: the model is not unloaded until
    every lease on it is released (`release`, once; later calls do nothing)."""

    def __init__(self, pool: ModelPool, model: ServedModel, keep_alive_s: float | None) -> None:
        self.pool, self.model, self.keep_alive_s = pool, model, keep_alive_s
        self._released = False

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def session(self) -> Session:
        assert self.model.session is not None, "a lease is handed out once the model is loaded"
        return self.model.session

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        model = self.model
        model.leases -= 1
        model.last_used = time.monotonic()
        model.keep_alive_s = self.keep_alive_s
        model.expires_at = None if self.keep_alive_s is None else time.time() + self.keep_alive_s


class ModelPool:
    """The configured models by name, each loaded while in use."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.models = [ServedModel(entry) for entry in config.served_models()]
        self.startup_done = False
        self._expiry: asyncio.Task[None] | None = None

    @property
    def first(self) -> ServedModel:
        """The model loaded at start-up, used where a request names none."""
        return self.models[0]

    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def find(self, name: str | None) -> ServedModel:
        """The model ``name`` names (its name, an alias, either with ``:latest``);
        404 naming the served models otherwise."""
        if name is None:
            return self.first
        bare = name.removesuffix(LATEST)
        for model in self.models:
            if name in model.entry.names or bare in model.entry.names:
                return model
        served = ", ".join(repr(n) for n in self.names())
        raise APIError(404, f"model {name!r} does not exist; this service serves {served}", param="model", code="model_not_found")

    def loaded(self) -> list[ServedModel]:
        return [model for model in self.models if model.session is not None]

    async def start(self) -> None:
        """Load the first model (in the background) and start unloading idle models."""
        self.first.loading = asyncio.ensure_future(self._load(self.first))
        self.first.loading.add_done_callback(self._started)
        self._expiry = asyncio.ensure_future(self._unload_expired())

    def _started(self, _: asyncio.Future[None]) -> None:
        self.startup_done = True

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for model in self.loaded():
            await self._unload(model)

    async def use(self, name: str | None, keep_alive_s: float | None, *, wait_for_startup: bool = True) -> ModelLease:
        """A lease on the model ``name`` names once it is loaded (loading it
        if need be, within ``server.request_timeout``); it stays loaded
        ``keep_alive_s`` after this request (None: until the service stops).
        ``wait_for_startup`` false: 503 while the start-up load runs."""
        model = self.find(name)
        if model.load_error is not None:
            raise APIError(503, f"the model failed to load: {model.load_error}", type="service_unavailable", code="model_not_ready")
        if model.session is None and model is self.first and not self.startup_done and not wait_for_startup:
            raise APIError(503, "the model is still loading", type="service_unavailable", code="model_not_ready")
        lease = ModelLease(self, model, keep_alive_s)
        model.leases += 1
        model.last_used = time.monotonic()
        try:
            await asyncio.wait_for(self._loaded(model), self.config.server.request_timeout)
        except asyncio.TimeoutError:
            lease.release()
            raise APIError(503, f"model {model.name!r} is still loading", type="service_unavailable", code="model_not_ready") from None
        except BaseException:
            lease.release()
            raise
        return lease

    async def _loaded(self, model: ServedModel) -> None:
        while model.session is None:
            if model.load_error is not None:
                raise APIError(503, f"the model failed to load: {model.load_error}", type="service_unavailable", code="model_not_ready")
            if model.loading is None:
                model.loading = asyncio.ensure_future(self._load(model))
            await asyncio.shield(model.loading)

    async def _load(self, model: ServedModel) -> None:
        try:
            await self._make_room(model)
            started = time.monotonic()
            session = await asyncio.to_thread(Session, **model.entry.session_options())
        except MistralVllmError as e:
            model.resident = False
            model.load_error = str(e)
            log.error("model %s failed to load: %s", model.name, e)
            return
        finally:
            model.loading = None
        info = session.info()
        model.model_id, model.max_running_sequences = info["model"], info["max_running_sequences"]
        model.session = session
        model.expires_at = None if (keep := self.config.server.keep_alive_s) is None else time.time() + keep
        log.info("model %s loaded in %.1fs (%s)", model.name, time.monotonic() - started, info["device"])

    def _fits(self, model: ServedModel, others: list[ServedModel]) -> bool:
        limit_mib = self.config.server.max_loaded_mem
        in_memory = sum(other.size_bytes for other in others) + model.size_bytes
        return len(others) < self.config.server.max_loaded_models and (limit_mib is None or in_memory <= limit_mib * 2**20)

    async def _make_room(self, model: ServedModel) -> None:
        """Unload the least recently used idle models until ``model`` fits the
        bounds (waiting while the ones in the way have requests running), then
        count it as resident. A model that fits alone in no bound loads anyway."""
        while True:
            others = [other for other in self.models if other.resident and other is not model]
            if not others or self._fits(model, others):
                model.resident = True
                return
            idle = sorted((other for other in others if other.leases == 0 and other.session is not None), key=lambda m: m.last_used)
            if idle:
                log.info("unloading model %s to make room for %s", idle[0].name, model.name)
                await self._unload(idle[0])
            else:
                await asyncio.sleep(POLL_S)

    async def _unload(self, model: ServedModel) -> None:
        session, model.session = model.session, None
        model.resident, model.expires_at = False, None
        if session is not None:
            await asyncio.to_thread(session.close)
            log.info("model %s unloaded", model.name)

    async def _unload_expired(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            now = time.time()
            for model in self.loaded():
                if model.leases == 0 and model.expires_at is not None and model.expires_at <= now:
                    await self._unload(model)
