"""mistral.rs's tensor parallelism, reached from our config: the weights of
every layer split across devices, so that a model larger than one GPU runs.

mistral.rs has two backends, each a Cargo feature of the build:
- ``nccl``: the GPUs of one machine (CUDA builds); mistral.rs splits the
  model over every visible GPU when the build has NCCL, unless told not to.
- ``ring``: several machines (or processes) joined in a TCP ring; each node
  reads its rank, the world size and its neighbours' addresses from a JSON
  file (mistral.rs's ``RING_CONFIG``).
Both are configured through the process environment before the engine
starts; this module checks the choice against the build and sets it.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Literal

from ._core import BUILD_FEATURES
from .errors import ConfigError

Backend = Literal["auto", "off", "nccl", "ring"]
# The fields a ring node's file must give (mistral.rs's RingConfig).
RING_FIELDS = ("master_ip", "master_port", "port", "right_port", "rank", "world_size")


def check_ring_config(path: str | os.PathLike[str]) -> dict[str, object]:
    """The ring node's settings from ``path``; a clear error naming the file
    and the field when it is missing, unreadable or incomplete."""
    shown = Path(path)
    try:
        data = json.loads(shown.read_text())
    except OSError as e:
        raise ConfigError(f"engine.tensor_parallel.ring_config: {shown}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"engine.tensor_parallel.ring_config: {shown}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"engine.tensor_parallel.ring_config: {shown}: expected a JSON object with {', '.join(RING_FIELDS)}")
    missing = [field for field in RING_FIELDS if field not in data]
    if missing:
        raise ConfigError(f"engine.tensor_parallel.ring_config: {shown}: missing {', '.join(missing)} (expected {', '.join(RING_FIELDS)})")
    rank, world = data["rank"], data["world_size"]
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise ConfigError(f"engine.tensor_parallel.ring_config: {shown}: rank {rank!r} must be a whole number below world_size {world!r}")
    return data


def apply_tensor_parallel(backend: Backend, ring_config: str | os.PathLike[str] | None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the engine's environment for ``backend``: ``auto`` leaves
    mistral.rs's own choice (NCCL over every GPU when the build has it),
    ``off`` keeps the model on one device, ``nccl`` and ``ring`` need a build
    with that feature (``ring`` also the node's file)."""
    if backend in ("nccl", "ring") and backend not in BUILD_FEATURES:
        built = ", ".join(BUILD_FEATURES) or "none"
        raise ConfigError(
            f"engine.tensor_parallel.backend: {backend!r} needs a build with the {backend} feature "
            f"(e.g. FEATURES=cuda,{backend} make build); this build has features: {built}"
        )
    if backend != "ring" and ring_config is not None:
        raise ConfigError("engine.tensor_parallel.ring_config: only used with backend 'ring'")
    if backend == "off":
        environ["MISTRALRS_NO_NCCL"] = "1"
    elif backend == "nccl":
        environ.pop("MISTRALRS_NO_NCCL", None)
    elif backend == "ring":
        if ring_config is None:
            raise ConfigError("engine.tensor_parallel.ring_config: backend 'ring' needs the node's JSON file (rank, world_size, addresses)")
        check_ring_config(ring_config)
        environ["RING_CONFIG"] = str(Path(ring_config).resolve())
        environ["MISTRALRS_NO_NCCL"] = "1"
