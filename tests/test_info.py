"""What a session reports about itself, and the minimal chat command."""

from __future__ import annotations

from pathlib import Path

import tomllib

import mistralvllm
from mistralvllm import BUILD_FEATURES, MISTRALRS_VERSION, Session
from mistralvllm.config import Config
from mistralvllm.server.app import create_app

REPO = Path(__file__).resolve().parent.parent


def test_info_reports_what_is_in_effect(session: Session, default_model: Path) -> None:
    info = session.info()
    assert info["model"] == str(default_model.resolve())
    assert info["format"] == "gguf"
    assert info["architecture"] == "llama"
    assert info["num_layers"] == 30
    assert info["vocab_size"] == 49152
    assert info["max_seq_len"] == 8192
    assert info["device"] == "cpu"
    assert info["paged_attention"] is False
    assert info["block_size"] is None
    assert info["topology"] is None
    assert info["build_features"] == BUILD_FEATURES
    assert MISTRALRS_VERSION == "0.8.1"


def test_prefix_cache_is_on_by_default_within_its_memory(session) -> None:
    info = session.info()
    assert info["prefix_cache_n"] == 16
    assert info["prefix_cache_bytes_limit"] == 256 * 2**20
    assert session.info()["max_running_sequences"] == 32


def test_one_version_everywhere() -> None:
    """The version is written once, in rust/Cargo.toml; the package's metadata,
    `__version__` and the service's OpenAPI schema all read it from there."""
    crate = tomllib.loads((REPO / "rust" / "Cargo.toml").read_text())["package"]["version"]
    assert mistralvllm.__version__ == crate
    assert create_app(Config()).openapi()["info"]["version"] == crate
