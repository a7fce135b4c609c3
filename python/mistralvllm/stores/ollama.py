"""Models already pulled by Ollama, found by their Ollama names
(``qwen2.5:0.5b``, ``namespace/model:tag``, ``hf.co/org/repo:Q4_K_M``) in its
store: ``manifests/<host>/<namespace>/<model>/<tag>`` (JSON that lists the
model's layers by digest) and ``blobs/sha256-<hex>`` (the layers; the model
layer is a GGUF file)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from . import StoredModel

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
# What each part of a name may hold (Ollama's own rule is a little wider).
NAME_PART = re.compile(r"[\w][\w.-]*")
MODEL_LAYER = "application/vnd.ollama.image.model"
# Where Ollama keeps its store: the user's (macOS, and `ollama serve` run by
# hand), and the Linux service's (its install script's `ollama` user).
STORE_DIRS = ("~/.ollama/models", "/usr/share/ollama/.ollama/models")


@dataclass(frozen=True)
class OllamaName:
    """An Ollama model name, with Ollama's defaults filled in."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> OllamaName | None:
        """``[host/][namespace/]model[:tag]``, or None where ``name`` is not one."""
        path, colon, tag = name.partition(":")
        parts = path.split("/")
        if len(parts) > 3 or not all(NAME_PART.fullmatch(part) for part in parts) or (colon and not NAME_PART.fullmatch(tag)):
            return None
        host, namespace, model = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
        return cls(host, namespace, model, tag or DEFAULT_TAG)

    @property
    def short(self) -> str:
        """The name as ``ollama list`` shows it."""
        prefix = "" if self.host == DEFAULT_HOST else f"{self.host}/"
        prefix += "" if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE else f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    def manifest(self, store: Path) -> Path:
        return store / "manifests" / self.host / self.namespace / self.model / self.tag


def store_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The stores to search: ``OLLAMA_MODELS`` where set (as Ollama itself
    reads it), else Ollama's usual places that exist."""
    environ = os.environ if environ is None else environ
    if environ.get("OLLAMA_MODELS"):
        return [Path(environ["OLLAMA_MODELS"]).expanduser()]
    return [path for path in (Path(each).expanduser() for each in STORE_DIRS) if path.is_dir()]


def searched(environ: Mapping[str, str] | None = None) -> str:
    """The stores searched, for messages and listings."""
    return ", ".join(map(str, store_dirs(environ))) or "none found; OLLAMA_MODELS names one"


def model_blob(store: Path, manifest: Path) -> Path:
    """The GGUF blob that ``manifest``'s model layer names."""
    try:
        layers = json.loads(manifest.read_text())["layers"]
        digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == MODEL_LAYER)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, StopIteration):
        raise ModelLoadError(f"{manifest}: not an Ollama manifest with a model layer ({MODEL_LAYER})") from None
    blob = store / "blobs" / str(digest).replace(":", "-", 1)
    if not blob.is_file():
        raise ModelLoadError(f"{manifest}: its model layer {digest} is missing from {store / 'blobs'}; pull the model again with Ollama")
    return blob


def find_model(name: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The GGUF file of the Ollama model ``name``, or None where no store has it."""
    parsed = OllamaName.parse(name)
    if parsed is None:
        return None
    for store in store_dirs(environ):
        if (manifest := parsed.manifest(store)).is_file():
            return model_blob(store, manifest)
    return None


def list_models(environ: Mapping[str, str] | None = None) -> list[StoredModel]:
    """Every model in the stores, by name (a manifest without its blob is left out)."""
    found = []
    for store in store_dirs(environ):
        for manifest in sorted((store / "manifests").glob("*/*/*/*")):
            if not manifest.is_file():
                continue
            host, namespace, model, tag = manifest.relative_to(store / "manifests").parts
            try:
                blob = model_blob(store, manifest)
            except ModelLoadError:
                continue
            found.append(StoredModel(OllamaName(host, namespace, model, tag).short, blob, blob.stat().st_size))
    return found
