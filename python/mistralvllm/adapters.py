"""LoRA adapters from local directories.

mistral.rs 0.8.1 looks LoRA adapters up by Hugging Face repo id only
(``NormalLoaderBuilder::with_lora``), through the hub client, which answers
from its local cache before it would download. So a local adapter directory
(PEFT's ``adapter_config.json`` + ``adapter_model.safetensors``) is entered in
that cache under a repo id of its own, as links to the directory's files:
nothing is copied and nothing is fetched.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# The repo-id owner under which local adapters are entered in the hub cache.
LOCAL_OWNER = "mistralvllm-local"
SNAPSHOT = "local"


def hub_cache_dir() -> Path:
    """The hub cache mistral.rs reads: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache)
    home = os.environ.get("HF_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "huggingface") / "hub"


def check_adapter_dir(directory: Path) -> Path:
    """The adapter directory, resolved, once its two files are as PEFT writes them."""
    try:
        directory = directory.expanduser().resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise ModelLoadError(f"lora: {directory}: no such adapter directory ({e})") from None
    config_path = directory / ADAPTER_CONFIG
    if not directory.is_dir() or not config_path.is_file():
        raise ModelLoadError(f"lora: {directory}: expected a directory with {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} (as PEFT saves them)")
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise ModelLoadError(f"lora: {directory}: no {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{config_path}: not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path}: expected a JSON object")
    for field, kind, expected in (("r", int, "the rank, an integer"), ("lora_alpha", (int, float), "a number")):
        if isinstance(config.get(field), bool) or not isinstance(config.get(field), kind):
            raise ModelLoadError(f"{config_path}: {field}: expected {expected}")
    modules = config.get("target_modules")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) for m in modules):
        raise ModelLoadError(f'{config_path}: target_modules: expected a list of module names like ["q_proj", "v_proj"]')
    return directory


def _link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target``, replacing what was there, atomically."""
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)


def lora_adapter_id(directory: Path) -> str:
    """Enter a local adapter directory in the hub cache; its repo id for mistral.rs."""
    directory = check_adapter_dir(directory)
    repo_id = f"{LOCAL_OWNER}/{hashlib.sha256(str(directory).encode()).hexdigest()[:16]}"
    entry = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    snapshot = entry / "snapshots" / SNAPSHOT
    try:
        snapshot.mkdir(parents=True, exist_ok=True)
        (entry / "refs").mkdir(exist_ok=True)
        (entry / "refs" / "main").write_text(SNAPSHOT)
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            _link(directory / name, snapshot / name)
    except OSError as e:
        raise ModelLoadError(f"lora: {directory}: cannot enter it in the hub cache at {entry} ({e})") from None
    return repo_id
