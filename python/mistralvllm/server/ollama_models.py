"""What Ollama's model routes (`/api/tags`, `/api/show`, `/api/ps`) tell about
the one model this service serves: from `Session.info()` and the headers of
the model's files. What is not known is left out, never guessed (no digest:
the files are not hashed; no memory size; no expiry: the model stays loaded
while the service runs)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..model_metadata import ModelMetadataError, Scalar, human_count, read_gguf, safetensors_parameter_count
from ..session import Session
from .ollama_responses import ListedModel, ModelDetails, RunningModel, ShowResponse
from .state import ServiceState

log = logging.getLogger("mistralvllm.server")
# Every model answers through its chat template, and our tool calling serves any model.
CAPABILITIES = ["completion", "tools"]


def tagged_name(state: ServiceState) -> str:
    """The served model's name as Ollama lists it, with its tag: Open WebUI
    adds ``:latest`` to a name without one and looks that up in the list."""
    return f"{state.model_id}:latest"


def served_name(state: ServiceState, name: str) -> str:
    """The served model's name for ``name`` as a client gave it, with or without ``:latest``."""
    return state.model_id if name == tagged_name(state) else name


@dataclass(frozen=True)
class ModelFiles:
    """What the model's files say: their size and time, the parameter count,
    and a GGUF's quantization and key-values."""

    size: int
    modified_at: str
    parameter_count: int | None = None
    file_type: str | None = None
    values: dict[str, Scalar] = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def read_model_files(path: str, model_format: str) -> ModelFiles:
    """The facts of the model at ``path`` (a GGUF file or a model directory),
    read once: the files do not change while the service runs."""
    location = Path(path)
    files = [location] if location.is_file() else [p for p in location.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    modified_at = datetime.fromtimestamp(location.stat().st_mtime, timezone.utc).isoformat()
    try:
        if model_format == "gguf":
            gguf = read_gguf(location)
            return ModelFiles(size, modified_at, gguf.parameter_count, gguf.file_type, gguf.values)
        if model_format == "safetensors":
            return ModelFiles(size, modified_at, safetensors_parameter_count(location))
    except (ModelMetadataError, OSError) as e:
        log.warning("cannot read the header of %s, so its parameter count and quantization are left out: %s", path, e)
    return ModelFiles(size, modified_at)


async def model_files(session: Session) -> ModelFiles:
    info = session.info()
    return await session.off_loop(read_model_files, info["model"], info["format"])


def details(info: dict[str, Any], files: ModelFiles) -> ModelDetails:
    """Format, family, parameter size and quantization level (an ISQ type, or
    the GGUF's file type; left out when a topology mixes types)."""
    quantization = None if info["topology"] else info["isq"] or files.file_type
    parameters = human_count(files.parameter_count) if files.parameter_count else None
    family = info["architecture"]
    return ModelDetails(format=info["format"], family=family, families=[family], parameter_size=parameters, quantization_level=quantization)


def listed_model(state: ServiceState, session: Session, files: ModelFiles) -> ListedModel:
    name = tagged_name(state)
    return ListedModel(name=name, model=name, modified_at=files.modified_at, size=files.size, details=details(session.info(), files))


def running_model(state: ServiceState, session: Session, files: ModelFiles) -> RunningModel:
    info = session.info()
    return RunningModel(
        name=tagged_name(state),
        model=tagged_name(state),
        details=details(info, files),
        context_length=info["max_seq_len"],
        size_vram=0 if info["device"] == "cpu" else None,
    )


def shown_model(session: Session, files: ModelFiles) -> ShowResponse:
    info = session.info()
    model_info: dict[str, Any] = {"general.architecture": info["architecture"], **files.values}
    if files.parameter_count:
        model_info.setdefault("general.parameter_count", files.parameter_count)
    model_info.setdefault(f"{info['architecture']}.context_length", info["max_seq_len"])
    return ShowResponse(details=details(info, files), model_info=model_info, capabilities=CAPABILITIES, modified_at=files.modified_at)
