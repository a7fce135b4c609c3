"""What Ollama's model routes (`/api/tags`, `/api/show`, `/api/ps`) tell about
the configured models: from the config, `Session.info()` once loaded, and
the headers of the model's files. What is not known is left out, never
guessed (no digest: the files are not hashed; the size is the files' size)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...model_metadata import ModelMetadataError, Scalar, human_count, read_gguf, safetensors_parameter_count
from ...session import Session
from ..model_pool import ServedModel, model_facts
from .bodies import ListedModel, ModelDetails, RunningModel, ShowResponse

log = logging.getLogger("mistralvllm.server")
# Every chat model answers through its chat template, and our tool calling serves any of them.
CHAT_CAPABILITIES = ["completion", "tools"]


def tagged_name(model: ServedModel) -> str:
    """A model's name as Ollama lists it, with its tag: Open WebUI adds
    ``:latest`` to a name without one and looks that up in the list."""
    return f"{model.name}:latest"


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


def configured_info(model: ServedModel) -> dict[str, Any]:
    """What `details` reads, from the model's config entry and its files' header (no load)."""
    facts = model_facts(model.entry.path)
    return {"format": facts["format"], "architecture": facts["architecture"], "topology": model.entry.topology, "isq": model.entry.isq}


async def model_files(model: ServedModel) -> ModelFiles:
    def read() -> ModelFiles:
        facts = model_facts(model.entry.path)
        return read_model_files(facts["path"], facts["format"])

    return await asyncio.to_thread(read)


def details(info: Mapping[str, Any], files: ModelFiles) -> ModelDetails:
    """Format, family, parameter size and quantization level (an ISQ type, or
    the GGUF's file type; left out when a topology mixes types)."""
    quantization = None if info["topology"] else info["isq"] or files.file_type
    parameters = human_count(files.parameter_count) if files.parameter_count else None
    family = info["architecture"]
    return ModelDetails(format=info["format"], family=family, families=[family], parameter_size=parameters, quantization_level=quantization)


def listed_model(model: ServedModel, files: ModelFiles) -> ListedModel:
    name = tagged_name(model)
    return ListedModel(name=name, model=name, modified_at=files.modified_at, size=files.size, details=details(configured_info(model), files))


def running_model(model: ServedModel, session: Session, files: ModelFiles) -> RunningModel:
    info = session.info()
    expires = model.expires_at if model.leases == 0 else None
    return RunningModel(
        name=tagged_name(model),
        model=tagged_name(model),
        size=files.size,
        details=details(info, files),
        expires_at=None if expires is None else datetime.fromtimestamp(expires, timezone.utc).isoformat(),
        context_length=info["max_seq_len"],
        size_vram=0 if info["device"] == "cpu" else None,
    )


def shown_model(session: Session, files: ModelFiles) -> ShowResponse:
    info = session.info()
    model_info: dict[str, Any] = {"general.architecture": info["architecture"], **files.values}
    if files.parameter_count:
        model_info.setdefault("general.parameter_count", files.parameter_count)
    model_info.setdefault(f"{info['architecture']}.context_length", info["max_seq_len"])
    return ShowResponse(
        details=details(info, files),
        model_info=model_info,
        capabilities=["embedding"] if info["task"] == "embedding" else CHAT_CAPABILITIES,
        modified_at=files.modified_at,
    )
