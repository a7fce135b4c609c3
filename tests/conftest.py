"""Shared fixtures: the bundled default model, and plain models that the test
suite makes itself from it once per machine (cached outside the repo)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mistralvllm import Session, default_model_path
from mistralvllm.convert import gguf_to_plain
from model_makers import random_llama
from postgres_server import PostgresServer, start_postgres
from service import run_server

CACHE_DIR = Path(os.environ.get("MISTRALVLLM_CACHE", Path.home() / ".cache" / "mistralvllm")) / "models"
# Bump when the conversion changes, so stale copies are not reused.
PLAIN_MODEL_NAME = "smollm2-135m-instruct-f32-v1"
TINY_MODEL_NAME = "tiny-llama-2l-v1"


def _cached(name: str, make) -> Path:
    """Build a model directory once per machine; concurrent runs wait on a lock."""
    target = CACHE_DIR / name
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            make(target)
    return target


@pytest.fixture(scope="session")
def default_model() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def plain_model(default_model: Path) -> Path:
    """SmolLM2-135M-Instruct dequantized to float32 safetensors (30 layers)."""
    return _cached(PLAIN_MODEL_NAME, lambda out: gguf_to_plain(default_model, out))


@pytest.fixture(scope="session")
def tiny_model(plain_model: Path) -> Path:
    """A 2-layer random llama with the real tokenizer, for fast load tests."""
    return _cached(TINY_MODEL_NAME, lambda out: random_llama(plain_model, out, num_layers=2))


@pytest.fixture(scope="session")
def session(default_model: Path) -> Iterator[Session]:
    """One default-model session shared by the tests that only send requests."""
    with Session(default_model) as s:
        yield s


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`mistralvllm serve` with the default config, an API key and a private history."""
    yield from run_server(tmp_path_factory)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test suite's own, for the PostgreSQL history."""
    server = start_postgres()
    yield server
    server.stop()
