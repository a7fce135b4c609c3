"""A forward pass in numpy float64, from a GGUF file of the llama, qwen2,
qwen3 or gemma3 architecture.

The weights are the GGUF's own, dequantized by the ``gguf`` package: the
same quantized numbers the engines read, so comparing an engine with this
measures the engine's arithmetic (its float32/bf16 sums, quantized
activations, fused kernels), not the quantization of the model. Every
hyper-parameter comes from the GGUF's metadata.

Rotary layout: for llama, llama.cpp's converter permutes the rows of the Q
and K projections so that each rotated pair is two adjacent dimensions of a
head (GPT-J style, llama.cpp's ``LLAMA_ROPE_TYPE_NORM``), where Hugging
Face's llama rotates dimension ``i`` with ``i + head_dim / 2`` (NeoX style).
With the GGUF's rows as they are, the adjacent pairing is the right one
(checked against llama.cpp's and our engine's greedy tokens: the other
pairing disagrees with both from the first positions on). Qwen2 and Qwen3
files keep Hugging Face's rows, and llama.cpp rotates them NeoX style
(``LLAMA_ROPE_TYPE_NEOX``). Qwen2 adds biases to Q, K and V; Qwen3 instead
normalizes each head of Q and K (RMS norm over the head) before rotating.

Gemma 3 as llama.cpp computes it (``llm_build_gemma3_iswa``): Qwen3's head
norms, the embeddings scaled by sqrt(hidden), a norm after attention and
after the feed-forward as well as before, a GELU (tanh) gate, and five layers
in six that attend to the last ``attention.sliding_window`` positions with a
rope base of 10000 (the sixth: the whole context, ``rope.freq_base``).
Queries are scaled by 1/sqrt(head_dim); the converter has already added
Gemma's 1 to the norm weights.

Embeddings: `hidden_states` stops after the final norm, before the output
projection; `embedding` pools those rows and normalizes them, as a
sentence-transformers model does (tests/model_makers.py's
`tiny_embedding_model` writes a Qwen3 GGUF's weights as such a model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")
# Gemma 3: every sixth layer attends globally, the others locally with this rope base.
GEMMA3_PATTERN = 6
GEMMA3_LOCAL_ROPE_THETA = 10_000.0
# How `embedding` pools the hidden states of a text.
POOLINGS = ("lasttoken", "mean")


@dataclass(frozen=True)
class ModelShape:
    """The hyper-parameters of a model, as its GGUF states them."""

    architecture: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_dimensions: int
    rope_theta: float
    rms_norm_eps: float
    sliding_window: int | None = None

    @property
    def rope_pairs_adjacent(self) -> bool:
        """Each rotated pair is two adjacent dimensions (llama's permuted
        rows), else dimension i and i + half (NeoX: qwen2, qwen3)."""
        return self.architecture == "llama"

    def window(self, index: int) -> int | None:
        """The sliding window layer ``index`` attends to (None: all positions)."""
        if self.architecture != "gemma3" or (index + 1) % GEMMA3_PATTERN == 0:
            return None
        return self.sliding_window

    def rope_theta_of(self, index: int) -> float:
        return GEMMA3_LOCAL_ROPE_THETA if self.window(index) is not None else self.rope_theta


@dataclass(frozen=True)
class ReferenceModel:
    """The model's shape and its dequantized weights (float32, ``(out, in)``),
    named as in the GGUF (``blk.0.attn_q.weight``, ``token_embd.weight``)."""

    shape: ModelShape
    weights: dict[str, np.ndarray]

    def layer(self, index: int, part: str, kind: str = "weight") -> np.ndarray:
        return self.weights[f"blk.{index}.{part}.{kind}"].astype(np.float64)

    def has(self, index: int, part: str, kind: str = "weight") -> bool:
        return f"blk.{index}.{part}.{kind}" in self.weights

    @property
    def output(self) -> np.ndarray:
        """The output projection: its own tensor, or the tied embedding."""
        return self.weights.get("output.weight", self.weights["token_embd.weight"])


def load(gguf_path: str | Path) -> ReferenceModel:
    """Read and dequantize a GGUF of one of ARCHITECTURES."""
    reader = GGUFReader(gguf_path)
    architecture = reader.fields["general.architecture"].contents()
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{gguf_path}: general.architecture is {architecture!r}, not one of {', '.join(ARCHITECTURES)}")
    meta = {key.removeprefix(f"{architecture}."): field.contents() for key, field in reader.fields.items() if key.startswith(f"{architecture}.")}
    hidden = int(meta["embedding_length"])
    heads = int(meta["attention.head_count"])
    head_dim = int(meta.get("attention.key_length", hidden // heads))
    shape = ModelShape(
        architecture=architecture,
        layers=int(meta["block_count"]),
        hidden=hidden,
        heads=heads,
        kv_heads=int(meta.get("attention.head_count_kv", heads)),
        head_dim=head_dim,
        rope_dimensions=int(meta.get("rope.dimension_count", head_dim)),
        rope_theta=float(meta.get("rope.freq_base", 10000.0)),
        rms_norm_eps=float(meta["attention.layer_norm_rms_epsilon"]),
        sliding_window=int(meta["attention.sliding_window"]) if "attention.sliding_window" in meta else None,
    )
    weights = {}
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weights[tensor.name] = values.reshape([int(d) for d in reversed(tensor.shape)])
    return ReferenceModel(shape, weights)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotate(x: np.ndarray, shape: ModelShape, theta: float) -> np.ndarray:
    """Rotary position embedding of ``x`` (positions, heads, head_dim) with
    base ``theta``, the pairs as the architecture lays them out
    (`ModelShape.rope_pairs_adjacent`)."""
    positions = np.arange(x.shape[0], dtype=np.float64)
    pairs = shape.rope_dimensions // 2
    inverse_frequency = theta ** (-np.arange(pairs, dtype=np.float64) * 2 / shape.rope_dimensions)
    angle = positions[:, None, None] * inverse_frequency[None, None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = x.copy()
    if shape.rope_pairs_adjacent:
        first, second = slice(0, 2 * pairs, 2), slice(1, 2 * pairs, 2)
    else:
        first, second = slice(0, pairs), slice(pairs, 2 * pairs)
    rotated[..., first] = x[..., first] * cos - x[..., second] * sin
    rotated[..., second] = x[..., first] * sin + x[..., second] * cos
    return rotated


def projection(model: ReferenceModel, index: int, part: str, h: np.ndarray, heads: int) -> np.ndarray:
    """``h`` through one of Q, K, V (with its bias where the file has one), per head."""
    out = h @ model.layer(index, part).T
    if model.has(index, part, "bias"):
        out = out + model.layer(index, part, "bias")
    out = out.reshape(h.shape[0], heads, model.shape.head_dim)
    if model.has(index, f"{part}_norm"):
        out = rms_norm(out, model.layer(index, f"{part}_norm"), model.shape.rms_norm_eps)
    return out


def attention(model: ReferenceModel, index: int, h: np.ndarray) -> np.ndarray:
    """Causal grouped-query self-attention of layer ``index`` over all
    positions (over the last ``window`` of them where the layer has one)."""
    shape, n = model.shape, h.shape[0]
    q = projection(model, index, "attn_q", h, shape.heads)
    k = projection(model, index, "attn_k", h, shape.kv_heads)
    v = projection(model, index, "attn_v", h, shape.kv_heads)
    theta = shape.rope_theta_of(index)
    q, k = rotate(q, shape, theta), rotate(k, shape, theta)
    group = shape.heads // shape.kv_heads  # query head i reads KV head i // group
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(shape.head_dim)
    scores[:, ~np.tri(n, dtype=bool)] = -np.inf
    if (window := shape.window(index)) is not None:
        scores[:, np.tri(n, k=-window, dtype=bool)] = -np.inf
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", scores, v).reshape(n, shape.heads * shape.head_dim)
    return out @ model.layer(index, "attn_output").T


def feed_forward(model: ReferenceModel, index: int, h: np.ndarray) -> np.ndarray:
    """The gated feed-forward: SiLU, or GELU (tanh) for gemma3."""
    gate = h @ model.layer(index, "ffn_gate").T
    up = h @ model.layer(index, "ffn_up").T
    if model.shape.architecture == "gemma3":
        activated = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
    else:
        activated = gate / (1 + np.exp(-gate))
    return (activated * up) @ model.layer(index, "ffn_down").T


def hidden_states(model: ReferenceModel, tokens: list[int]) -> np.ndarray:
    """One causal pass over ``tokens``: row ``i`` is the last layer's output
    at position ``i`` after the final norm (``output_norm``), before the
    output projection (float64)."""
    shape = model.shape
    x = model.weights["token_embd.weight"][tokens].astype(np.float64)
    gemma3 = shape.architecture == "gemma3"
    if gemma3:
        x = x * np.sqrt(shape.hidden)
    for index in range(shape.layers):
        attended = attention(model, index, rms_norm(x, model.layer(index, "attn_norm"), shape.rms_norm_eps))
        if gemma3:
            attended = rms_norm(attended, model.layer(index, "post_attention_norm"), shape.rms_norm_eps)
        x = x + attended
        forwarded = feed_forward(model, index, rms_norm(x, model.layer(index, "ffn_norm"), shape.rms_norm_eps))
        if gemma3:
            forwarded = rms_norm(forwarded, model.layer(index, "post_ffw_norm"), shape.rms_norm_eps)
        x = x + forwarded
    return rms_norm(x, model.weights["output_norm.weight"].astype(np.float64), shape.rms_norm_eps)


def log_probabilities(model: ReferenceModel, tokens: list[int]) -> np.ndarray:
    """One causal pass over ``tokens``: row ``i`` is the natural-log
    next-token distribution after ``tokens[: i + 1]`` (float64)."""
    logits = hidden_states(model, tokens) @ model.output.astype(np.float64).T
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def embedding(model: ReferenceModel, tokens: list[int], pooling: str = "lasttoken") -> np.ndarray:
    """The sentence embedding of ``tokens`` (float64, unit length), as
    sentence-transformers' Pooling and Normalize modules make it from the
    `hidden_states`: the last position's row (``lasttoken``, Qwen3-Embedding's
    pooling) or the mean of the rows (``mean``; mistral.rs sums them, the same
    direction), divided by its L2 norm."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling is {pooling!r}, not one of {', '.join(POOLINGS)}")
    states = hidden_states(model, tokens)
    pooled = states[-1] if pooling == "lasttoken" else states.mean(axis=0)
    return pooled / np.linalg.norm(pooled)
