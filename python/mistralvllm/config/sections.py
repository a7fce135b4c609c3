"""The config's sections that apply to the whole service: ``sampling``
(defaults for every request), ``history`` and ``server``, on `Section`, the
base of every section (unknown keys refused)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..history.location import check_postgres_url
from ..images import DEFAULT_MAX_IMAGE_BYTES, ImageSources
from ..sampling import SamplingOptions

# Go's time.ParseDuration (``"5m"``, ``"1h30m"``, ``"-1s"``), or a bare number of seconds.
DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h))+|[-+]?(\d+\.?\d*|\.\d+)")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: float | str) -> float | None:
    """Ollama's ``keep_alive`` in seconds: a duration (``"5m"``, ``"1h30m"``)
    or a number of seconds; ``None`` (keep loaded) when negative."""
    text = str(value).strip()
    if isinstance(value, bool) or not DURATION.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration; expected e.g. '5m', '1h', '-1' or a number of seconds")
    body = text.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts) if parts else float(body)
    return None if text.startswith("-") and seconds > 0 else seconds


class Section(BaseModel):
    """A config section: unknown keys are refused, and so are bad values set later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingSection(Section, SamplingOptions):
    """Defaults for every request; a request (or /set in the chat) overrides
    them (`SamplingParams.over`)."""


class HistorySection(Section):
    """Where conversations are stored: SQLite at `path` (the default), or PostgreSQL at `url`."""

    enabled: bool = True
    path: str | None = Field(None, description="SQLite database; null: history.sqlite3 in the user data directory")
    url: str | None = Field(
        None,
        description="PostgreSQL database (postgresql://USER:PASSWORD@HOST:PORT/DATABASE) that several services can share; "
        "needs the 'postgres' extra; null: SQLite at path",
    )
    context_budget: int | None = Field(None, ge=1, description="Tokens of context a chat may use; null: the model's context window")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else check_postgres_url(value)

    @model_validator(mode="after")
    def _one_database(self) -> HistorySection:
        if self.path is not None and self.url is not None:
            raise ValueError("set either path (SQLite) or url (PostgreSQL), not both; set the other to null")
        return self


class ImagesSection(Section):
    """Where a request's images may come from besides ``data:`` URLs (the
    image in the request itself), as vLLM's allowed local media path and
    media fetching do."""

    local_dir: str | None = Field(None, description="file: URLs (and paths) under this directory are read; null: no file is")
    fetch_http: bool = Field(False, description="Fetch http(s) image URLs (the service then reaches the network); false: refuse them")
    max_bytes: int = Field(DEFAULT_MAX_IMAGE_BYTES, ge=1024, description="Largest image, in bytes as encoded (PNG, JPEG, ...)")

    def sources(self) -> ImageSources:
        """These settings as `images.resolve_images` takes them."""
        local_root = Path(self.local_dir).expanduser() if self.local_dir is not None else None
        return ImageSources(local_root=local_root, fetch_http=self.fetch_http, max_bytes=self.max_bytes)


class ServerSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key: str | None = None
    max_request_bytes: int = Field(32 << 20, ge=1024, description="Larger request bodies get 413 (a request's images count, base64 in data: URLs)")
    images: ImagesSection = Field(default_factory=ImagesSection)
    max_tokens_limit: int | None = Field(None, ge=1, description="Largest max_tokens a request may ask for")
    request_timeout: float | None = Field(
        300,
        gt=0,
        description="Seconds a request may take, waiting included; then it ends with a request_timeout error and "
        "its answer so far is stored as interrupted; null: no limit",
    )
    keep_alive: float | str = Field(
        "5m",
        description="How long a model stays loaded after its last request (Ollama's keep_alive): a duration such as '5m' or "
        "'1h', or seconds; negative: until the service stops; 0: unload after each request. A request's keep_alive overrides it",
    )
    max_loaded_models: int = Field(3, ge=1, description="Models loaded at once; loading another unloads the least recently used idle one")
    max_loaded_mem: int | None = Field(
        None, ge=1, description="MiB of model files loaded at once (the files' size stands for the model's memory); null: no bound"
    )

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: float | str) -> float | str:
        keep_alive_seconds(value)
        return value

    @property
    def keep_alive_s(self) -> float | None:
        """``keep_alive`` in seconds; None: keep models loaded."""
        return keep_alive_seconds(self.keep_alive)
