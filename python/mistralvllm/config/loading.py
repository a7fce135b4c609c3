"""Loading the config: defaults < config file < environment
(``MISTRALVLLM_<SECTION>__<FIELD>``) < overrides (command-line flags),
with errors that name where each bad value came from."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ..cpu_builds import CPU_BUILD_VARIABLE
from ..errors import ConfigError
from ..models import is_model_name
from .settings import Config

ENV_PREFIX = "MISTRALVLLM_"
# A place in the config as pydantic's errors name it: keys and list indices.
Loc = tuple[int | str, ...]


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[Loc, str]]:
    """``MISTRALVLLM_SECTION__FIELD=value`` → nested dict, and which variable set each path.
    Values are parsed as JSON when they can be (numbers, booleans, null, lists)."""
    overrides: dict[str, Any] = {}
    origins: dict[Loc, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in (f"{ENV_PREFIX}CONFIG", CPU_BUILD_VARIABLE):
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


def _model_relative_to(base: Path, value: str, config_file: Path, field: str) -> str:
    """A model path relative to the config file, or a model name as it is
    (an Ollama name or a Hugging Face repo id, where no such path exists)."""
    path = _relative_to(base, value, config_file, field)
    return value if not Path(path).exists() and is_model_name(value) else path


def _resolve_relative_paths(data: dict[str, Any], config_file: Path) -> dict[str, Any]:
    """Model, adapter and history paths written in a file are relative to the file."""
    base = config_file.resolve().parent
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("lora"), list):
        model["lora"] = [_relative_to(base, entry, config_file, "model.lora") if isinstance(entry, str) else entry for entry in model["lora"]]
    for section, relative in (("model", _model_relative_to), ("history", _relative_to)):
        value = data.get(section)
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            data[section] = {**value, "path": relative(base, value["path"], config_file, f"{section}.path")}
    entries = data.get("models")
    if isinstance(entries, list):
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            field = f"models[{index}]"
            if isinstance(entry.get("path"), str):
                entry["path"] = _model_relative_to(base, entry["path"], config_file, f"{field}.path")
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
