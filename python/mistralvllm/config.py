"""The configuration file (`config/config.json`), validated with pydantic.

Precedence, lowest first: defaults < config file < environment
(``MISTRALVLLM_<SECTION>__<FIELD>``, e.g. ``MISTRALVLLM_SAMPLING__TEMPERATURE=0.7``)
< command-line flags. Every error names where the bad value came from (the
file or the environment variable), the field path and what was expected.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._core import ISQ_NAMES, Topology
from .errors import ConfigError
from .history.location import check_postgres_url
from .models import DEFAULT_MODEL_FILE, served_model_name
from .sampling_bounds import ConfigTemperature, MaxTokens, MinP, RepetitionPenalty, Seed, TopK, TopP
from .session import prefix_cache_bytes

ENV_PREFIX = "MISTRALVLLM_"
# A place in the config as pydantic's errors name it: keys and list indices.
Loc = tuple[int | str, ...]
_DEVICE = re.compile(r"^(auto|cpu|cuda\[\d+\]|metal\[\d+\])$")
_LAYERS = re.compile(r"^\s*(\d+)\s*(?:\.\.|-)\s*(\d+)\s*$")
# Go's time.ParseDuration (``"5m"``, ``"1h30m"``, ``"-1s"``), or a bare number of seconds.
DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h))+|[-+]?(\d+\.?\d*|\.\d+)")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _check_isq(value: str | None) -> str | None:
    if value is None:
        return None
    for name in ISQ_NAMES:
        if name.lower() == value.lower():
            return name
    raise ValueError(f"{value!r} is not one of {', '.join(ISQ_NAMES)}")


def _check_device(value: str | None) -> str | None:
    if value is not None and not _DEVICE.match(value):
        raise ValueError(f"{value!r} is not a device; expected 'auto', 'cpu', 'cuda[N]' or 'metal[N]'")
    return value


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
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    """Which model to load and how."""

    path: str | None = Field(None, description="A .gguf file or a Hugging Face model directory; null: the bundled default model")
    dtype: Literal["auto", "bf16", "f16", "f32"] = "auto"
    device: str = Field("auto", description="auto, cpu, cuda[N] or metal[N]")
    isq: str | None = Field(None, description="In-situ quantization of the whole (plain) model, e.g. Q4K")
    lora: list[str] = Field(
        default_factory=list,
        description="LoRA adapter directories (PEFT's adapter_config.json + adapter_model.safetensors) merged into a plain model",
    )

    _isq = field_validator("isq")(_check_isq)
    _device = field_validator("device")(_check_device)


class TopologyRangeSection(Section):
    """One layer range of the per-layer topology; `layers` is end-exclusive."""

    layers: str = Field(description="'START..END' (end exclusive), e.g. '0..8'")
    isq: str | None = None
    device: str | None = None

    _isq = field_validator("isq")(_check_isq)
    _device = field_validator("device")(_check_device)

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: str) -> str:
        match = _LAYERS.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a layer range; expected 'START..END' (end exclusive), e.g. '0..8'")
        start, end = int(match[1]), int(match[2])
        if start >= end:
            raise ValueError(f"{value!r}: start must be below end (the end is exclusive)")
        return f"{start}..{end}"

    @property
    def bounds(self) -> tuple[int, int]:
        start, end = self.layers.split("..")
        return int(start), int(end)


class PagedAttentionSection(Section):
    """PagedAttention (CUDA/Metal): mode, block size and KV-cache memory."""

    mode: Literal["auto", "on", "off"] = "auto"
    block_size: Literal[8, 16, 32] | None = None
    gpu_mem: int | None = Field(None, gt=0, description="KV-cache memory in MB")
    gpu_mem_usage: float | None = Field(None, gt=0, le=1, description="KV-cache memory as a fraction of GPU memory")
    context_len: int | None = Field(None, gt=0, description="KV-cache memory sized for this many tokens")
    cache_type: Literal["auto", "f8e4m3"] = Field("auto", description="KV-cache dtype: auto (the model's) or f8e4m3 (CUDA)")

    @model_validator(mode="after")
    def _one_memory_setting(self) -> PagedAttentionSection:
        given = [n for n in ("gpu_mem", "gpu_mem_usage", "context_len") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of gpu_mem, gpu_mem_usage, context_len (got {', '.join(given)})")
        return self

    def kv_mem(self) -> int | float | str | None:
        """The memory setting in `Session`'s `kv_mem` form."""
        if self.gpu_mem is not None:
            return self.gpu_mem
        if self.gpu_mem_usage is not None:
            return float(self.gpu_mem_usage)
        if self.context_len is not None:
            return f"{self.context_len} tokens"
        return None


class TensorParallelSection(Section):
    """mistral.rs's tensor parallelism (see mistralvllm.tensor_parallel)."""

    backend: Literal["auto", "off", "nccl", "ring"] = Field(
        "auto", description="auto: mistral.rs's choice (NCCL over every GPU when built with nccl); off; nccl; ring"
    )
    ring_config: str | None = Field(None, description="ring: this node's JSON file (rank, world_size, master/neighbour addresses)")


class EngineSection(Section):
    tensor_parallel: TensorParallelSection = TensorParallelSection()
    max_num_seqs: int = Field(32, ge=1, description="Sequences the engine runs at once")
    prefix_cache: int | None = Field(
        None,
        ge=0,
        description="Finished sequences whose KV caches are kept for prompts that start the same way "
        "(oldest evicted first); 0 turns it off; null: 16",
    )
    prefix_cache_mem: int | str | None = Field(
        None,
        description="KV data the prefix cache may hold: MiB as an int, or '512MiB'/'1GiB'; null: 256 MiB (~45 KiB per token with the default model)",
    )

    @field_validator("prefix_cache_mem")
    @classmethod
    def _check_prefix_cache_mem(cls, value: int | str | None) -> int | str | None:
        try:
            prefix_cache_bytes(value)
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("prefix_cache_mem: ")) from None
        return value


def build_topology(ranges: list[TopologyRangeSection]) -> Topology | None:
    """A `topology` list as a `Topology` (None when empty)."""
    if not ranges:
        return None
    topology = Topology()
    for index, entry in enumerate(ranges):
        try:
            topology = topology.with_range(*entry.bounds, isq=entry.isq, device=entry.device)
        except ConfigError as e:
            raise ValueError(f"topology[{index}]: {e}") from None
    return topology


class ServedModelSection(ModelSection):
    """One entry of `models`: the name clients send, other names it answers
    to, and the options the `model`, `topology`, `paged_attention` and
    `engine` sections give a single model."""

    name: str = Field(min_length=1, description="The model id clients send (OpenAI's and Ollama's `model`)")
    aliases: list[str] = Field(default_factory=list, description="Other names this model answers to")
    topology: list[TopologyRangeSection] = Field(default_factory=list)
    paged_attention: PagedAttentionSection = PagedAttentionSection()
    engine: EngineSection = EngineSection()

    @model_validator(mode="after")
    def _topology_is_consistent(self) -> ServedModelSection:
        build_topology(self.topology)
        return self

    @property
    def names(self) -> list[str]:
        return [self.name, *self.aliases]

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for `Session`."""
        return {
            "model": self.path,
            "topology": build_topology(self.topology),
            "isq": self.isq,
            "device": self.device,
            "dtype": self.dtype,
            "paged_attention": self.paged_attention.mode,
            "block_size": self.paged_attention.block_size,
            "kv_mem": self.paged_attention.kv_mem(),
            "paged_cache_type": self.paged_attention.cache_type,
            "lora": self.lora,
            "max_num_seqs": self.engine.max_num_seqs,
            "prefix_cache": self.engine.prefix_cache,
            "prefix_cache_mem": self.engine.prefix_cache_mem,
            "tensor_parallel": self.engine.tensor_parallel.backend,
            "ring_config": self.engine.tensor_parallel.ring_config,
        }


class SamplingSection(Section):
    """Defaults for every request; a request (or /set in the chat) overrides them."""

    max_tokens: MaxTokens | None = None
    temperature: ConfigTemperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    seed: Seed | None = None
    stop: list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: RepetitionPenalty | None = None

    def options(self) -> dict[str, Any]:
        """The set fields, as keyword arguments for `Session.chat`."""
        return self.model_dump(exclude_none=True)


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


class ServerSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key: str | None = None
    max_request_bytes: int = Field(1 << 20, ge=1024, description="Larger request bodies get 413")
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


# The sections that configure the one model of a config without `models`.
SINGLE_MODEL_SECTIONS = ("model", "topology", "paged_attention", "engine")


class Config(Section):
    """Everything `mistralvllm chat` and `mistralvllm serve` need."""

    model: ModelSection = ModelSection()
    topology: list[TopologyRangeSection] = Field(default_factory=list)
    paged_attention: PagedAttentionSection = PagedAttentionSection()
    engine: EngineSection = EngineSection()
    models: list[ServedModelSection] = Field(
        default_factory=list, description="Several named models for one service (the first loads at start-up); empty: the one model above"
    )
    sampling: SamplingSection = SamplingSection()
    system_prompt: str | None = None
    history: HistorySection = HistorySection()
    server: ServerSection = ServerSection()

    @model_validator(mode="after")
    def _models_are_consistent(self) -> Config:
        build_topology(self.topology)
        given = [name for name in SINGLE_MODEL_SECTIONS if name in self.model_fields_set]
        if self.models and given:
            raise ValueError(f"models: give each model's options in its entry, and leave out {', '.join(given)}")
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.models):
            for name in entry.names:
                if name in seen:
                    raise ValueError(f"models[{index}]: the name {name!r} is already taken by models[{seen[name]}]; names and aliases must be unique")
                seen[name] = index
        return self

    def served_models(self) -> list[ServedModelSection]:
        """The configured models, first the one loaded at start-up: `models`,
        or the one model of the single-model sections (named after its file)."""
        if self.models:
            return list(self.models)
        name = served_model_name(self.model.path or DEFAULT_MODEL_FILE)
        return [
            ServedModelSection(name=name, **self.model.model_dump(), topology=self.topology, paged_attention=self.paged_attention, engine=self.engine)
        ]

    def find_model(self, name: str) -> ServedModelSection | None:
        """The configured model that ``name`` names (its name or an alias)."""
        return next((entry for entry in self.served_models() if name in entry.names), None)

    def build_topology(self) -> Topology | None:
        """The first model's `topology` as a `Topology` (None when empty)."""
        return build_topology(self.served_models()[0].topology)

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for the first model's `Session`."""
        return self.served_models()[0].session_options()

    def digest(self) -> str:
        """A short hash of the settings that shape answers, stored with each conversation."""
        shaping = self.model_dump(include={"model", "topology", "models", "sampling", "system_prompt"})
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[Loc, str]]:
    """``MISTRALVLLM_SECTION__FIELD=value`` → nested dict, and which variable set each path.
    Values are parsed as JSON when they can be (numbers, booleans, null, lists)."""
    overrides: dict[str, Any] = {}
    origins: dict[Loc, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is not a section")
        target[path[-1]] = value
        origins[path] = name
    return overrides, origins


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _field_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at ``loc`` (for "did you mean")."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = get_args(annotation)[0] if get_origin(annotation) is list else annotation
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        model = inner
    return model


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _field_model(loc)
        known = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(known)}" if known else ""
        return f"unknown key {loc[-1]!r}{hint}"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message[:1].lower() + message[1:]
    shown = error.get("input")
    if kind in ("literal_error", "enum"):
        return f"{shown!r}: {message}"
    if kind != "missing" and not isinstance(shown, dict | list) and not message.startswith("'"):
        return f"{message} (got {shown!r})"
    return message


def _errors_to_config_error(error: ValidationError, source: str, origins: Mapping[Loc, str]) -> ConfigError:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), source)
        field = f"{_format_loc(loc)}: " if loc else ""
        lines.append(f"{where}: {field}{_describe(item)}")
    return ConfigError("\n".join(lines))


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw JSON object of a config file, with errors that name it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a JSON config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}); expected a JSON config file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be a config file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _relative_to(base: Path, value: str, config_file: Path, field: str) -> str:
    try:
        path = Path(value).expanduser()
    except RuntimeError:
        raise ConfigError(f"{config_file}: {field}: {value!r} starts with ~ but names no known user") from None
    return str(path if path.is_absolute() else base / path)


def _resolve_relative_paths(data: dict[str, Any], config_file: Path) -> dict[str, Any]:
    """Model, adapter and history paths written in a file are relative to the file."""
    base = config_file.resolve().parent
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("lora"), list):
        model["lora"] = [_relative_to(base, entry, config_file, "model.lora") if isinstance(entry, str) else entry for entry in model["lora"]]
    for section in ("model", "history"):
        value = data.get(section)
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            data[section] = {**value, "path": _relative_to(base, value["path"], config_file, f"{section}.path")}
    entries = data.get("models")
    if isinstance(entries, list):
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            field = f"models[{index}]"
            if isinstance(entry.get("path"), str):
                entry["path"] = _relative_to(base, entry["path"], config_file, f"{field}.path")
            if isinstance(entry.get("lora"), list):
                entry["lora"] = [_relative_to(base, item, config_file, f"{field}.lora") if isinstance(item, str) else item for item in entry["lora"]]
    return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults < the file at ``path`` < ``MISTRALVLLM_*`` environment < ``overrides``
    (nested dict, e.g. from command-line flags). Relative model and history
    paths in a file are taken relative to the file's directory."""
    environ = os.environ if environ is None else environ
    data = _resolve_relative_paths(read_config_file(path), Path(path)) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    env_data, origins = _env_overrides(environ)
    merged = _merge(_merge(data, env_data), overrides or {})
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise _errors_to_config_error(e, source, origins) from None


def config_schema() -> dict[str, Any]:
    """JSON schema of the config file, for editors."""
    return Config.model_json_schema()
