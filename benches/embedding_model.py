"""A Qwen3 GGUF's weights as a sentence-transformers embedding model, in the
layout of Qwen3-Embedding-0.6B, which mistral.rs's embedding loader reads:

- config.json (``Qwen3ForCausalLM``, the hyper-parameters the GGUF states);
- model.safetensors, float32, named as mistral.rs's Qwen3 embedding model
  reads them (no ``model.`` prefix, no lm_head);
- modules.json: Transformer, last-token Pooling (1_Pooling/config.json),
  Normalize (2_Normalize/, empty);
- the tokenizer.json and tokenizer_config.json of a Hugging Face directory.

The same GGUF is what llama.cpp embeds with (``--pooling last``), and
`reference_forward.embedding` of it is the float64 reference. Qwen3 files
keep Hugging Face's row order (no rotary permutation to undo)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import reference_forward

# Hugging Face's names of a Qwen3 layer's tensors, by their GGUF names (blk.{i}.<key>).
QWEN3_LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def write_sentence_transformers(gguf_path: Path, tokenizer_dir: Path, out: Path) -> None:
    """Write the embedding model of the qwen3 GGUF at ``gguf_path`` into the
    existing directory ``out``, with ``tokenizer_dir``'s tokenizer."""
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    reference = reference_forward.load(gguf_path)
    shape = reference.shape
    if shape.architecture != "qwen3":
        raise ValueError(f"{gguf_path}: a {shape.architecture} model, not qwen3")
    weights = reference.weights
    tensors = {"embed_tokens.weight": weights["token_embd.weight"], "norm.weight": weights["output_norm.weight"]}
    for layer in range(shape.layers):
        for gguf_name, hf_name in QWEN3_LAYER_TENSORS.items():
            tensors[f"layers.{layer}.{hf_name}.weight"] = weights[f"blk.{layer}.{gguf_name}.weight"]
    context = int(GGUFReader(gguf_path).fields["qwen3.context_length"].contents())
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": weights["token_embd.weight"].shape[0],
        "hidden_size": shape.hidden,
        "intermediate_size": weights["blk.0.ffn_gate.weight"].shape[0],
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": context,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": shape.rope_theta,
        "sliding_window": None,
        "use_sliding_window": False,
        "max_window_layers": shape.layers,
        "tie_word_embeddings": "output.weight" not in weights,
        "torch_dtype": "float32",
    }
    pooling = {
        "word_embedding_dimension": shape.hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True,
        "include_prompt": True,
    }
    save_file({name: np.ascontiguousarray(values, dtype=np.float32) for name, values in tensors.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "modules.json").write_text(json.dumps(MODULES, indent=2))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (out / "2_Normalize").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, out / name)
