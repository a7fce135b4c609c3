"""A float64 numpy forward pass of a Gemma 3 vision model in the layout
`vision_model.write_gemma3_vision` writes (SigLIP tower, average-pooled
projector, Gemma 3 text model), as mistral.rs computes it: the reference
the engine's image prompts are checked against (tests/test_images.py).

The prompt's token ids are given already expanded, as the engine's
processor expands an image marker: ``"\\n\\n<start_of_image>"``, the image's
soft tokens, ``"<end_of_image>\\n\\n"``. Image tokens of one image see each
other both ways; everything else is causal, with Gemma 3's sliding window
on its local layers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

Array = Any  # numpy arrays (float64)


@dataclass(frozen=True)
class VisionModel:
    weights: dict[str, Array]
    text: dict[str, Any]
    vision: dict[str, Any]
    image_token: int
    tokens_per_image: int


def load(model_dir: Path) -> VisionModel:
    config = json.loads((model_dir / "config.json").read_text())
    weights = {name: value.astype(np.float64) for name, value in load_file(str(model_dir / "model.safetensors")).items()}
    return VisionModel(weights, config["text_config"], config["vision_config"], config["image_token_index"], config["mm_tokens_per_image"])


def _gelu(x: Array) -> Array:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float = 1e-6) -> Array:
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * weight + bias


def _gemma_rms_norm(x: Array, weight: Array, eps: float = 1e-6) -> Array:
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * (1 + weight)


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _rope(x: Array, positions: Array, base: float) -> Array:
    """Rotary embedding of (heads, positions, dim), halves rotated (NeoX)."""
    d = x.shape[-1]
    angles = np.outer(positions, 1 / base ** (np.arange(0, d, 2) / d))
    cos, sin = np.cos(angles), np.sin(angles)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def image_features(model: VisionModel, pixels: Array) -> Array:
    """The soft tokens of an RGB image of the tower's size ((size, size, 3), 0-255)."""
    w, v = model.weights, model.vision
    x = ((pixels / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    p, n = v["patch_size"], v["image_size"] // v["patch_size"]
    pre = "vision_tower.vision_model"
    kernel, bias = w[f"{pre}.embeddings.patch_embedding.weight"], w[f"{pre}.embeddings.patch_embedding.bias"]
    patches = [np.einsum("chw,ochw->o", x[:, i * p : (i + 1) * p, j * p : (j + 1) * p], kernel) + bias for i in range(n) for j in range(n)]
    h = np.stack(patches) + w[f"{pre}.embeddings.position_embedding.weight"]
    heads = v["num_attention_heads"]
    head_dim = v["hidden_size"] // heads

    def linear(x: Array, name: str) -> Array:
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    for layer in range(v["num_hidden_layers"]):
        at = f"{pre}.encoder.layers.{layer}"
        y = _layer_norm(h, w[f"{at}.layer_norm1.weight"], w[f"{at}.layer_norm1.bias"])
        q, k, u = (linear(y, f"{at}.self_attn.{m}_proj").reshape(-1, heads, head_dim).transpose(1, 0, 2) for m in "qkv")
        attended = _softmax(q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)) @ u
        h = h + linear(attended.transpose(1, 0, 2).reshape(-1, v["hidden_size"]), f"{at}.self_attn.out_proj")
        y = _layer_norm(h, w[f"{at}.layer_norm2.weight"], w[f"{at}.layer_norm2.bias"])
        h = h + linear(_gelu(linear(y, f"{at}.mlp.fc1")), f"{at}.mlp.fc2")
    h = _layer_norm(h, w[f"{pre}.post_layernorm.weight"], w[f"{pre}.post_layernorm.bias"])
    grid = h.T.reshape(-1, n, n)
    tokens_per_side = math.isqrt(model.tokens_per_image)
    k = n // tokens_per_side
    pooled = grid.reshape(-1, tokens_per_side, k, tokens_per_side, k).mean(axis=(2, 4)).reshape(grid.shape[0], -1).T
    pooled = _gemma_rms_norm(pooled, w["multi_modal_projector.mm_soft_emb_norm.weight"])
    return pooled @ w["multi_modal_projector.mm_input_projection_weight"]


def next_token_logprobs(model: VisionModel, ids: list[int], images: list[Array]) -> Array:
    """Log-probabilities of the token after ``ids`` (images' soft tokens
    expanded, one run of them per image, in order)."""
    w, t = model.weights, model.text
    tokens = np.array(ids)
    embeddings = w["language_model.model.embed_tokens.weight"]
    x = embeddings[tokens] * math.sqrt(t["hidden_size"])
    is_image = tokens == model.image_token
    if images:
        x[is_image] = np.concatenate([image_features(model, image) for image in images])
    n = len(tokens)
    mask = np.tril(np.ones((n, n), bool))
    run = np.cumsum(np.r_[is_image[:1], is_image[1:] & ~is_image[:-1]]) * is_image
    mask |= (run[:, None] == run[None, :]) & is_image[:, None] & is_image[None, :]
    heads, kv_heads, head_dim = t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]
    positions = np.arange(n)
    for layer in range(t["num_hidden_layers"]):
        at = f"language_model.model.layers.{layer}"
        sliding = (layer + 1) % t["sliding_window_pattern"] != 0
        allowed = mask & (positions[:, None] - positions[None, :] < t["sliding_window"]) if sliding else mask
        y = _gemma_rms_norm(x, w[f"{at}.input_layernorm.weight"])
        q = (y @ w[f"{at}.self_attn.q_proj.weight"].T).reshape(n, heads, head_dim).transpose(1, 0, 2)
        k = (y @ w[f"{at}.self_attn.k_proj.weight"].T).reshape(n, kv_heads, head_dim).transpose(1, 0, 2)
        u = (y @ w[f"{at}.self_attn.v_proj.weight"].T).reshape(n, kv_heads, head_dim).transpose(1, 0, 2)
        q, k = _gemma_rms_norm(q, w[f"{at}.self_attn.q_norm.weight"]), _gemma_rms_norm(k, w[f"{at}.self_attn.k_norm.weight"])
        base = t["rope_local_base_freq"] if sliding else t["rope_theta"]
        q, k = _rope(q, positions, base), _rope(k, positions, base)
        k, u = np.repeat(k, heads // kv_heads, 0), np.repeat(u, heads // kv_heads, 0)
        scores = np.where(allowed, q @ k.transpose(0, 2, 1) / math.sqrt(t["query_pre_attn_scalar"]), -np.inf)
        attended = (_softmax(scores) @ u).transpose(1, 0, 2).reshape(n, -1)
        x = x + _gemma_rms_norm(attended @ w[f"{at}.self_attn.o_proj.weight"].T, w[f"{at}.post_attention_layernorm.weight"])
        y = _gemma_rms_norm(x, w[f"{at}.pre_feedforward_layernorm.weight"])
        gated = _gelu(y @ w[f"{at}.mlp.gate_proj.weight"].T) * (y @ w[f"{at}.mlp.up_proj.weight"].T)
        x = x + _gemma_rms_norm(gated @ w[f"{at}.mlp.down_proj.weight"].T, w[f"{at}.post_feedforward_layernorm.weight"])
    logits = _gemma_rms_norm(x[-1], w["language_model.model.norm.weight"]) @ embeddings.T
    logits = logits - logits.max()
    return logits - np.log(np.exp(logits).sum())
