"""The stores other tools keep models in, whose models load here by name:
Ollama's (`stores.ollama`) and the Hugging Face cache (`stores.huggingface`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredModel:
    """A model found in a store: the name that loads it, its file (or
    directory) and its size on disk."""

    name: str
    path: Path
    size_bytes: int
