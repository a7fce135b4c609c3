"""Every GGUF architecture computes what a float64 numpy forward pass of the
same weights computes: tiny random models of each (the bench matrix's
writer, benches/model_shapes.py, with Q8_0 matrices) scored by the engine
and by benches/reference_forward.py. This covers what the loaders share:
token embeddings kept quantized on the CPU and looked up row by row, tied
output weights that are the embedding's tensor, and a KV cache kept in f16
(patches/mistralrs-core-0.8.1/0011-*, 0012-*)."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from mistralvllm import SamplingParams, Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import reference_forward
from fidelity import TEXT, compare
from model_shapes import ModelShape, write_random

CACHE_DIR = Path(os.environ.get("MISTRALVLLM_CACHE", Path.home() / ".cache" / "mistralvllm")) / "models"
TOKENS = 40
# Tiny shapes of each architecture the reference computes, with the bundled
# model's 49152-token vocabulary; qwen3's heads are wider than hidden/heads,
# as Qwen3's are, and one llama keeps an output layer of its own.
SHAPES = [
    ModelShape("tiny-qwen2", "qwen2", 128, 2, 4, 2, 256, 49152),
    ModelShape("tiny-qwen3", "qwen3", 128, 2, 4, 2, 256, 49152, head_dim=64),
    ModelShape("tiny-llama-untied", "llama", 128, 2, 4, 2, 256, 49152, tied=False, rope_theta=10_000.0),
]


def tiny_gguf(shape: ModelShape, tokenizer_source: Path) -> Path:
    """The shape's Q8_0 GGUF, written once per machine (bump -v1 when the writer changes)."""
    target = CACHE_DIR / f"{shape.name}-q8_0-v1.gguf"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            partial = target.with_name(target.name + ".part")
            write_random(shape, tokenizer_source, partial, matrix_type="Q8_0")
            partial.replace(target)
    return target


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.name for shape in SHAPES])
def test_the_engine_computes_each_architecture_as_the_reference(shape: ModelShape, default_model: Path) -> None:
    path = tiny_gguf(shape, default_model)
    with Session(path, prefix_cache=0) as session:
        assert session.info()["architecture"].lower().startswith(shape.architecture[:4])
        tokens = session.tokenize(prompt=TEXT)[:TOKENS]
        engine = np.stack([np.frombuffer(row, "<f4") for row in session.score_distributions(tokens)]).astype(np.float64)
        answer = session.chat([{"role": "user", "content": "Hello"}], SamplingParams(max_tokens=6))
    reference = reference_forward.log_probabilities(reference_forward.load(path), tokens)[:-1]
    figures = compare(reference, engine, tokens)
    assert figures["kl_mean"] < 0.02, figures
    assert figures["top1_agreement"] >= 0.9, figures
    assert answer.usage.completion_tokens >= 1
