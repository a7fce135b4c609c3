"""Models the test suite makes itself: a tiny llama with random weights and
the default model's tokenizer, a random LoRA adapter for a llama, in the
layouts the engine loads (not shipped with the package), tiny GGUFs of any
architecture (`tiny_gguf`), a tiny Qwen3 GGUF's weights as a
sentence-transformers embedding model (`tiny_embedding_model`), and a tiny
Gemma 3 vision model with random weights (`tiny_vision_model`), the last
three cached once per machine."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mistralvllm.convert import staged_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from embedding_model import write_sentence_transformers
from model_shapes import ModelShape, write_random
from vision_model import write_gemma3_vision

CACHE_DIR = Path(os.environ.get("MISTRALVLLM_CACHE", Path.home() / ".cache" / "mistralvllm")) / "models"


def tiny_gguf(shape: ModelShape, tokenizer_source: Path, *, chat_template: str | None = None) -> Path:
    """The shape's Q8_0 GGUF with random weights (`write_random`; its chat
    template replaced where given), written once per machine under
    CACHE_DIR (bump -v1 when the writer changes)."""
    target = CACHE_DIR / f"{shape.name}-q8_0-v1.gguf"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            partial = target.with_name(target.name + ".part")
            write_random(shape, tokenizer_source, partial, matrix_type="Q8_0", chat_template=chat_template)
            partial.replace(target)
    return target


def tiny_embedding_model(shape: ModelShape, gguf_tokenizer_source: Path, tokenizer_dir: Path) -> Path:
    """The weights of ``tiny_gguf(shape, gguf_tokenizer_source)`` (a qwen3
    shape) as a sentence-transformers embedding model with ``tokenizer_dir``'s
    tokenizer (`embedding_model.write_sentence_transformers`), written once per
    machine under CACHE_DIR (bump -v1 when the writer changes);
    benches/reference_forward.py's `embedding` of the GGUF is its reference."""
    target = CACHE_DIR / f"{shape.name}-v1"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            with staged_dir(target) as staging:
                write_sentence_transformers(tiny_gguf(shape, gguf_tokenizer_source), tokenizer_dir, staging)
    return target


def tiny_vision_model(tokenizer_dir: Path) -> Path:
    """A tiny Gemma 3 vision model (SigLIP tower, projector, two text layers)
    with random weights and ``tokenizer_dir``'s tokenizer, its image tokens
    added (`vision_model.write_gemma3_vision`), written once per machine
    under CACHE_DIR (bump -v1 when the writer changes)."""
    target = CACHE_DIR / "tiny-gemma3-vision-v1"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            with staged_dir(target) as staging:
                write_gemma3_vision(tokenizer_dir, staging)
    return target


def random_llama(template_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, num_layers: int = 2, seed: int = 0) -> Path:
    """A tiny llama with random weights and the tokenizer of ``template_dir``,
    for fast tests of loading, ISQ and topologies (its text is gibberish)."""
    import numpy as np
    from safetensors.numpy import save_file

    template_dir, out_dir = Path(template_dir), Path(out_dir)
    config = json.loads((template_dir / "config.json").read_text())
    hidden, intermediate, heads, kv_heads = 64, 128, 4, 2
    config.update(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_hidden_layers=num_layers,
    )
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> Any:
        return rng.normal(0.0, 0.02, size=shape).astype(np.float32)

    tensors = {
        "model.embed_tokens.weight": weight(config["vocab_size"], hidden),
        "model.norm.weight": np.ones(hidden, dtype=np.float32),
    }
    for layer in range(num_layers):
        prefix = f"model.layers.{layer}"
        tensors |= {
            f"{prefix}.self_attn.q_proj.weight": weight(heads * head_dim, hidden),
            f"{prefix}.self_attn.k_proj.weight": weight(kv_heads * head_dim, hidden),
            f"{prefix}.self_attn.v_proj.weight": weight(kv_heads * head_dim, hidden),
            f"{prefix}.self_attn.o_proj.weight": weight(hidden, heads * head_dim),
            f"{prefix}.mlp.gate_proj.weight": weight(intermediate, hidden),
            f"{prefix}.mlp.up_proj.weight": weight(intermediate, hidden),
            f"{prefix}.mlp.down_proj.weight": weight(hidden, intermediate),
            f"{prefix}.input_layernorm.weight": np.ones(hidden, dtype=np.float32),
            f"{prefix}.post_attention_layernorm.weight": np.ones(hidden, dtype=np.float32),
        }
    with staged_dir(out_dir) as staging:
        save_file(tensors, str(staging / "model.safetensors"))
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copy(template_dir / name, staging / name)
    return out_dir


def random_lora(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    rank: int = 8,
    alpha: float = 16.0,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    scale: float = 0.2,
    seed: int = 0,
) -> Path:
    """A LoRA adapter for the llama in ``model_dir``, in PEFT's layout
    (adapter_config.json, adapter_model.safetensors), with random A and B.
    (PEFT starts B at zero, which would change nothing; random B stands in
    for a few training steps.)"""
    import numpy as np
    from safetensors.numpy import save_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = json.loads((model_dir / "config.json").read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv_width = config.get("num_key_value_heads", heads) * head_dim
    shapes = {  # (out, in) of each projection
        "q_proj": (heads * head_dim, hidden),
        "k_proj": (kv_width, hidden),
        "v_proj": (kv_width, hidden),
        "o_proj": (hidden, heads * head_dim),
        "gate_proj": (config["intermediate_size"], hidden),
        "up_proj": (config["intermediate_size"], hidden),
        "down_proj": (hidden, config["intermediate_size"]),
    }
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module in target_modules:
            block = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            out_features, in_features = shapes[module]
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(0.0, scale, size=(rank, in_features)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(0.0, scale, size=(out_features, rank)).astype(np.float32)
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(model_dir),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(target_modules),
        "bias": "none",
    }
    with staged_dir(out_dir) as staging:
        save_file(tensors, str(staging / "adapter_model.safetensors"))
        (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return out_dir
