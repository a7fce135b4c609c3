"""A llama-architecture forward pass in numpy float64, from a GGUF file.

The weights are the GGUF's own, dequantized by the ``gguf`` package: the
same quantized numbers the engines read, so comparing an engine with this
measures the engine's arithmetic (its float32/bf16 sums, quantized
activations, fused kernels), not the quantization of the model. Every
hyper-parameter comes from the GGUF's metadata.

Rotary layout: llama.cpp's converter permutes the rows of the Q and K
projections so that each rotated pair is two adjacent dimensions of a head
(GPT-J style, llama.cpp's ``LLAMA_ROPE_TYPE_NORM``), where Hugging Face's
llama rotates dimension ``i`` with ``i + head_dim / 2`` (NeoX style). With
the GGUF's rows as they are, the adjacent pairing is the right one (checked
against llama.cpp's and our engine's greedy tokens: the other pairing
disagrees with both from the first positions on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


@dataclass(frozen=True)
class LlamaShape:
    """The hyper-parameters of a llama model, as its GGUF states them."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    rope_dimensions: int
    rope_theta: float
    rms_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class ReferenceLlama:
    """The model's shape and its dequantized weights (float32, ``(out, in)``),
    named as in the GGUF (``blk.0.attn_q.weight``, ``token_embd.weight``)."""

    shape: LlamaShape
    weights: dict[str, np.ndarray]

    def layer(self, index: int, part: str) -> np.ndarray:
        return self.weights[f"blk.{index}.{part}.weight"].astype(np.float64)

    @property
    def output(self) -> np.ndarray:
        """The output projection: its own tensor, or the tied embedding."""
        return self.weights.get("output.weight", self.weights["token_embd.weight"])


def load(gguf_path: str | Path) -> ReferenceLlama:
    """Read and dequantize a llama-architecture GGUF."""
    reader = GGUFReader(gguf_path)
    meta = {key: field.contents() for key, field in reader.fields.items() if key.startswith(("general.architecture", "llama."))}
    if meta.get("general.architecture") != "llama":
        raise ValueError(f"{gguf_path}: general.architecture is {meta.get('general.architecture')!r}, not 'llama'")
    hidden = int(meta["llama.embedding_length"])
    heads = int(meta["llama.attention.head_count"])
    shape = LlamaShape(
        layers=int(meta["llama.block_count"]),
        hidden=hidden,
        heads=heads,
        kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
        rope_dimensions=int(meta.get("llama.rope.dimension_count", hidden // heads)),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
    )
    weights = {}
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weights[tensor.name] = values.reshape([int(d) for d in reversed(tensor.shape)])
    return ReferenceLlama(shape, weights)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotate(x: np.ndarray, shape: LlamaShape) -> np.ndarray:
    """Rotary position embedding of ``x`` (positions, heads, head_dim), the
    pairs being adjacent dimensions (the GGUF's row layout)."""
    positions = np.arange(x.shape[0], dtype=np.float64)
    pairs = shape.rope_dimensions // 2
    inverse_frequency = shape.rope_theta ** (-np.arange(pairs, dtype=np.float64) * 2 / shape.rope_dimensions)
    angle = positions[:, None, None] * inverse_frequency[None, None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = x.copy()
    even, odd = x[..., 0 : 2 * pairs : 2], x[..., 1 : 2 * pairs : 2]
    rotated[..., 0 : 2 * pairs : 2] = even * cos - odd * sin
    rotated[..., 1 : 2 * pairs : 2] = even * sin + odd * cos
    return rotated


def attention(model: ReferenceLlama, index: int, h: np.ndarray) -> np.ndarray:
    """Causal grouped-query self-attention of layer ``index`` over all positions."""
    shape, n = model.shape, h.shape[0]
    q = (h @ model.layer(index, "attn_q").T).reshape(n, shape.heads, shape.head_dim)
    k = (h @ model.layer(index, "attn_k").T).reshape(n, shape.kv_heads, shape.head_dim)
    v = (h @ model.layer(index, "attn_v").T).reshape(n, shape.kv_heads, shape.head_dim)
    q, k = rotate(q, shape), rotate(k, shape)
    group = shape.heads // shape.kv_heads  # query head i reads KV head i // group
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(shape.head_dim)
    scores[:, ~np.tri(n, dtype=bool)] = -np.inf
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", scores, v).reshape(n, shape.heads * shape.head_dim)
    return out @ model.layer(index, "attn_output").T


def feed_forward(model: ReferenceLlama, index: int, h: np.ndarray) -> np.ndarray:
    gate = h @ model.layer(index, "ffn_gate").T
    up = h @ model.layer(index, "ffn_up").T
    return (gate / (1 + np.exp(-gate)) * up) @ model.layer(index, "ffn_down").T


def log_probabilities(model: ReferenceLlama, tokens: list[int]) -> np.ndarray:
    """One causal pass over ``tokens``: row ``i`` is the natural-log
    next-token distribution after ``tokens[: i + 1]`` (float64)."""
    shape = model.shape
    x = model.weights["token_embd.weight"][tokens].astype(np.float64)
    for index in range(shape.layers):
        x = x + attention(model, index, rms_norm(x, model.layer(index, "attn_norm"), shape.rms_norm_eps))
        x = x + feed_forward(model, index, rms_norm(x, model.layer(index, "ffn_norm"), shape.rms_norm_eps))
    x = rms_norm(x, model.weights["output_norm.weight"].astype(np.float64), shape.rms_norm_eps)
    logits = x @ model.output.astype(np.float64).T
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
