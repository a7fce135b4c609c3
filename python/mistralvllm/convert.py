"""Turn a llama-architecture GGUF file into a plain Hugging Face model directory.

ISQ and a per-layer :class:`~mistralvllm.Topology` apply to plain (safetensors)
models only, so this makes one from a GGUF without any hub access: weights are
dequantized to float32 (llama.cpp's rotary row permutation of the Q and K
projections undone), the tokenizer is rebuilt from the GGUF vocabulary and
merges, and the chat template is copied over.

Needs the ``convert`` extra: ``pip install 'mistralvllm[convert]'``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

_TENSOR_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GGUF_CONTROL_TOKEN = 3


def _hf_tensor_name(name: str) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    _, layer, part, suffix = name.split(".")
    return f"model.layers.{layer}.{_TENSOR_NAMES[part]}.{suffix}"


def _unpermute_rotary(weight: Any, heads: int) -> Any:
    """Undo llama.cpp's convert-time row permutation of a Q or K projection."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _metadata(reader: Any) -> dict[str, Any]:
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith(("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")):
            continue
        try:
            meta[key] = field.contents()
        except (ValueError, IndexError, TypeError):
            continue
    return meta


def _write_tokenizer(reader: Any, meta: dict[str, Any], out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types, strict=False) if kind == _GGUF_CONTROL_TOKEN]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    bos = tokens[meta["tokenizer.ggml.bos_token_id"]]
    eos = tokens[meta["tokenizer.ggml.eos_token_id"]]
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": tokens[meta.get("tokenizer.ggml.unknown_token_id", 0)],
        "pad_token": tokens[meta.get("tokenizer.ggml.padding_token_id", meta["tokenizer.ggml.eos_token_id"])],
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "model_max_length": int(meta["llama.context_length"]),
        "chat_template": meta.get("tokenizer.chat_template"),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def _llama_config(meta: dict[str, Any], num_layers: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": int(meta["llama.embedding_length"]),
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_attention_heads": int(meta["llama.attention.head_count"]),
        "num_key_value_heads": int(meta["llama.attention.head_count_kv"]),
        "num_hidden_layers": num_layers,
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta["llama.context_length"]),
        "vocab_size": int(meta.get("llama.vocab_size", 0)),
        "bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]),
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


@contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """A scratch directory beside ``out_dir`` renamed onto it on success, so an
    interrupted conversion never leaves a half-written model behind."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def gguf_to_plain(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write a Hugging Face directory (config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json) made from ``gguf_path``.

    The directory appears atomically: it is built beside ``out_dir`` and
    renamed into place, so an interrupted conversion leaves nothing half-made.
    """
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    try:
        reader = GGUFReader(gguf_path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{gguf_path}: cannot read GGUF file ({e})") from e
    meta = _metadata(reader)
    if meta.get("general.architecture") != "llama":
        raise ModelLoadError(f"{gguf_path}: general.architecture is {meta.get('general.architecture')!r}; only 'llama' can be converted")
    heads = int(meta["llama.attention.head_count"])
    kv_heads = int(meta["llama.attention.head_count_kv"])
    tensors = {}
    for tensor in reader.tensors:
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weight = weight.reshape([int(d) for d in reversed(tensor.shape)])
        if tensor.name.endswith("attn_q.weight"):
            weight = _unpermute_rotary(weight, heads)
        elif tensor.name.endswith("attn_k.weight"):
            weight = _unpermute_rotary(weight, kv_heads)
        tensors[_hf_tensor_name(tensor.name)] = np.ascontiguousarray(weight)
    config = _llama_config(meta, int(meta["llama.block_count"]))
    config["tie_word_embeddings"] = "lm_head.weight" not in tensors
    config["vocab_size"] = tensors["model.embed_tokens.weight"].shape[0]

    with staged_dir(out_dir) as staging:
        save_file(tensors, str(staging / "model.safetensors"))
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "generation_config.json").write_text(json.dumps({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}))
        _write_tokenizer(reader, meta, staging)
    return out_dir
