"""A tiny Gemma 3 vision model with random weights, in the layout that
mistral.rs's multimodal loader reads from a local directory for
``Gemma3ForConditionalGeneration``:

- config.json: ``text_config`` (a two-layer Gemma 3 text model, one
  sliding-window layer and one global), ``vision_config`` (a one-layer
  SigLIP tower on 56x56 images, 4x4 patches of 14 pixels), average-pooled by
  the projector to ``mm_tokens_per_image`` = 4 soft tokens an image;
- model.safetensors, float32, named as mistral.rs's ``Gemma3Model`` reads
  them: ``language_model.model.*`` (tied embeddings, no lm_head),
  ``vision_tower.vision_model.*``, ``multi_modal_projector.*``;
- the tokenizer.json of a Hugging Face directory (SmolLM2's) with Gemma 3's
  image tokens ``<start_of_image>``, ``<end_of_image>`` and
  ``<image_soft_token>`` added as special tokens, and its
  tokenizer_config.json with a ChatML template of our own in which an image
  part renders as ``<start_of_image>`` (the inputs processor expands it to
  the soft tokens that the projected image replaces);
- preprocessor_config.json (resize to 56x56, rescale, normalize by 0.5) and
  processor_config.json (``image_seq_length``: 4), and the source directory's
  generation_config.json.

The weights are random but sane: a matrix's values have a standard deviation
of 1/sqrt(its columns), SigLIP's layer norms and Gemma's RMS norms (which
scale by 1 + weight) are the identity but for the layers' post norms (x4, so
the layers' outputs outweigh the token's own embedding), and an image's soft
tokens have the scale of the text's embeddings, so an image moves the
next-token distribution and two different images move it differently (a
float64 numpy forward of mistral.rs's arithmetic: solid colours and noise
give different top tokens, KL between any two of them 0.6 nats or more)."""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

# Gemma 3's image tokens, as mistral.rs's Gemma3Processor names them.
BOI_TOKEN = "<start_of_image>"
EOI_TOKEN = "<end_of_image>"
IMAGE_TOKEN = "<image_soft_token>"
IMAGE_TOKENS = (BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN)

# The text model. head_dim is hidden_size / num_attention_heads: mistral.rs
# sizes the paged KV cache and the KV shards by that ratio, not by head_dim.
# Layer 0 is a sliding-window layer, layer 1 global (sliding_window_pattern
# 2); the window is wider than the tests' prompts.
TEXT_CONFIG: dict[str, Any] = {
    "model_type": "gemma3_text",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "rope_scaling": None,
    "sliding_window": 512,
    "sliding_window_pattern": 2,
    "max_position_embeddings": 2048,
    "attention_bias": False,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}
# The SigLIP tower: (56 / 14)^2 = 16 patches, pooled 2x2 into 4 soft tokens.
VISION_CONFIG: dict[str, Any] = {
    "model_type": "siglip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_channels": 3,
    "image_size": 56,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
MM_TOKENS_PER_IMAGE = 4
# The standard deviation of the token embedding's values: Gemma scales an
# embedding by sqrt(hidden_size), and the tied output layer makes the logits'
# standard deviation about 0.4 * sqrt(64) = 3.2, far from flat.
EMBEDDING_STD = 0.4
# The weight of each layer's post-attention and post-feedforward RMS norms
# (which scale by 1 + weight): the layers' outputs then outweigh the token's
# own embedding in the residual stream; with the identity (0) the tied output
# layer mostly predicts the last token again, whatever the image.
POST_NORM_WEIGHT = 3.0

# ChatML, as SmolLM2's, without its default system message; a content is a
# string or a list of parts, {"type": "text", "text": ...} or {"type": "image"}.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '" + BOI_TOKEN + "' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def text_tensor_shapes(text: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Each tensor of the language model, by the name mistral.rs's Gemma 3
    ``TextModel`` asks for (under ``language_model.model.``), and its shape
    (out, in) for a linear layer. The output layer is the embedding (tied)."""
    hidden, ffn, head_dim = text["hidden_size"], text["intermediate_size"], text["head_dim"]
    q, kv = text["num_attention_heads"] * head_dim, text["num_key_value_heads"] * head_dim
    yield "language_model.model.embed_tokens.weight", (text["vocab_size"], hidden)
    yield "language_model.model.norm.weight", (hidden,)
    for i in range(text["num_hidden_layers"]):
        layer = f"language_model.model.layers.{i}"
        yield f"{layer}.self_attn.q_proj.weight", (q, hidden)
        yield f"{layer}.self_attn.k_proj.weight", (kv, hidden)
        yield f"{layer}.self_attn.v_proj.weight", (kv, hidden)
        yield f"{layer}.self_attn.o_proj.weight", (hidden, q)
        yield f"{layer}.self_attn.q_norm.weight", (head_dim,)
        yield f"{layer}.self_attn.k_norm.weight", (head_dim,)
        yield f"{layer}.mlp.gate_proj.weight", (ffn, hidden)
        yield f"{layer}.mlp.up_proj.weight", (ffn, hidden)
        yield f"{layer}.mlp.down_proj.weight", (hidden, ffn)
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            yield f"{layer}.{norm}.weight", (hidden,)


def vision_tensor_shapes(vision: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Each tensor of the SigLIP tower, by the name mistral.rs's
    ``SiglipVisionTransformer`` asks for (under
    ``vision_tower.vision_model.``): the patch convolution (out, in, k, k)
    with its bias, the position embedding, each layer's attention and MLP
    (linear layers with biases) and layer norms, the post layer norm."""
    hidden, ffn, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    patches = (vision["image_size"] // patch) ** 2
    tower = "vision_tower.vision_model"
    yield f"{tower}.embeddings.patch_embedding.weight", (hidden, vision["num_channels"], patch, patch)
    yield f"{tower}.embeddings.patch_embedding.bias", (hidden,)
    yield f"{tower}.embeddings.position_embedding.weight", (patches, hidden)
    for i in range(vision["num_hidden_layers"]):
        layer = f"{tower}.encoder.layers.{i}"
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield f"{layer}.self_attn.{projection}.weight", (hidden, hidden)
            yield f"{layer}.self_attn.{projection}.bias", (hidden,)
        yield f"{layer}.mlp.fc1.weight", (ffn, hidden)
        yield f"{layer}.mlp.fc1.bias", (ffn,)
        yield f"{layer}.mlp.fc2.weight", (hidden, ffn)
        yield f"{layer}.mlp.fc2.bias", (hidden,)
        for norm in ("layer_norm1", "layer_norm2"):
            yield f"{layer}.{norm}.weight", (hidden,)
            yield f"{layer}.{norm}.bias", (hidden,)
    yield f"{tower}.post_layernorm.weight", (hidden,)
    yield f"{tower}.post_layernorm.bias", (hidden,)


def projector_tensor_shapes(text: dict[str, Any], vision: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The projector's tensors: its RMS norm of the pooled patches and its
    projection, a bare (vision hidden, text hidden) matrix that the patches
    multiply from the left (no ``.weight`` suffix)."""
    yield "multi_modal_projector.mm_soft_emb_norm.weight", (vision["hidden_size"],)
    yield "multi_modal_projector.mm_input_projection_weight", (vision["hidden_size"], text["hidden_size"])


def random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...], text_hidden: int) -> np.ndarray:
    """A tensor's values: Gemma's RMS norms 0 (they scale by 1 + weight) but
    the post norms `POST_NORM_WEIGHT`, SigLIP's layer norms 1 with bias 0;
    random: biases and the position embedding small, the token embedding
    `EMBEDDING_STD`, the projection as wide as a scaled text embedding, other
    matrices 1/sqrt(their inputs)."""
    if "norm" in name.split(".")[-2]:
        if name.startswith("vision_tower."):  # SigLIP's layer norms
            return (np.ones if name.endswith(".weight") else np.zeros)(shape, dtype=np.float32)
        post = name.split(".")[-2] in ("post_attention_layernorm", "post_feedforward_layernorm")
        return np.full(shape, POST_NORM_WEIGHT if post else 0.0, dtype=np.float32)  # Gemma's: 1 + weight
    if name.endswith(".bias"):
        std = 0.02
    elif name.endswith("position_embedding.weight"):
        std = 0.1
    elif name.endswith("embed_tokens.weight"):
        std = EMBEDDING_STD
    elif name.endswith("mm_input_projection_weight"):
        # The normed patches have unit RMS; their projection has the RMS of
        # a text embedding, EMBEDDING_STD * sqrt(hidden).
        std = EMBEDDING_STD * math.sqrt(text_hidden) / math.sqrt(shape[0])
    else:
        std = 1.0 / math.sqrt(math.prod(shape[1:]))
    return rng.normal(0.0, std, size=shape).astype(np.float32)


def extended_tokenizer(tokenizer_dir: Path, out: Path) -> dict[str, int]:
    """Write ``tokenizer_dir``'s tokenizer.json to ``out`` with the image
    tokens added as special tokens (each then a single token wherever it
    stands in a text); their ids, and ``"vocab_size"``, the full size."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.add_special_tokens(list(IMAGE_TOKENS))
    tokenizer.save(str(out / "tokenizer.json"))
    ids = {"vocab_size": tokenizer.get_vocab_size(with_added_tokens=True)}
    for token in IMAGE_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None or tokenizer.encode(token, add_special_tokens=False).ids != [token_id]:
            raise ValueError(f"{tokenizer_dir}: {token} is not one token once added")
        ids[token] = token_id
    return ids


def write_tokenizer_config(tokenizer_dir: Path, out: Path, ids: dict[str, int]) -> None:
    """``tokenizer_dir``'s tokenizer_config.json (bos, eos and the rest as
    they are) with the image tokens among its added tokens and our chat
    template."""
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    decoder = config.setdefault("added_tokens_decoder", {})
    for token in IMAGE_TOKENS:
        decoder[str(ids[token])] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    config["chat_template"] = CHAT_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def processor_configs(vision: dict[str, Any], mm_tokens_per_image: int = MM_TOKENS_PER_IMAGE) -> tuple[dict[str, Any], dict[str, Any]]:
    """preprocessor_config.json (what mistral.rs's Gemma 3 image processor
    unwraps: resize to the tower's image size, rescale by 1/255, normalize by
    mean and std 0.5, no pan and scan) and processor_config.json (the soft
    tokens an image takes, ``mm_tokens_per_image``)."""
    size = vision["image_size"]
    preprocessor = {
        "image_processor_type": "Gemma3ImageProcessor",
        "processor_class": "Gemma3Processor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": 2,  # bilinear
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pan_and_scan": False,
        "image_seq_length": mm_tokens_per_image,
    }
    processor = {"processor_class": "Gemma3Processor", "image_seq_length": mm_tokens_per_image}
    return preprocessor, processor


def write_gemma3_vision(
    tokenizer_dir: Path,
    out: Path,
    *,
    seed: int = 0,
    text_config: dict[str, Any] | None = None,
    vision_config: dict[str, Any] | None = None,
    mm_tokens_per_image: int = MM_TOKENS_PER_IMAGE,
) -> None:
    """Write the tiny Gemma 3 vision model into the existing empty directory
    ``out``, with ``tokenizer_dir``'s tokenizer (its image tokens added) and
    weights drawn from ``seed``; or a model of other shapes: ``text_config``
    and ``vision_config`` are laid over `TEXT_CONFIG` and `VISION_CONFIG`
    (their keys replace or add to the tiny model's), ``mm_tokens_per_image``
    replaces `MM_TOKENS_PER_IMAGE` (a square number whose side divides the
    patches a side). The weights' scales are the tiny model's whatever the
    shapes (`random_tensor`). Without them the files are the tiny model's,
    byte for byte."""
    from safetensors.numpy import save_file

    ids = extended_tokenizer(tokenizer_dir, out)
    write_tokenizer_config(tokenizer_dir, out, ids)
    text = {**TEXT_CONFIG, **(text_config or {}), "vocab_size": ids["vocab_size"]}
    vision = {**VISION_CONFIG, **(vision_config or {})}
    patches_per_side = vision["image_size"] // vision["patch_size"]
    tokens_per_side = math.isqrt(mm_tokens_per_image)
    if tokens_per_side**2 != mm_tokens_per_image or patches_per_side % tokens_per_side:
        raise ValueError(f"{patches_per_side}x{patches_per_side} patches do not pool into {mm_tokens_per_image} tokens")
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "torch_dtype": "float32",
        "text_config": text,
        "vision_config": vision,
        "boi_token_index": ids[BOI_TOKEN],
        "eoi_token_index": ids[EOI_TOKEN],
        "image_token_index": ids[IMAGE_TOKEN],
        "mm_tokens_per_image": mm_tokens_per_image,
    }
    rng = np.random.default_rng(seed)
    shapes = [*text_tensor_shapes(text), *vision_tensor_shapes(vision), *projector_tensor_shapes(text, vision)]
    tensors = {name: random_tensor(rng, name, shape, text["hidden_size"]) for name, shape in shapes}
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    preprocessor, processor = processor_configs(vision, mm_tokens_per_image)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2))
    if (tokenizer_dir / "generation_config.json").is_file():
        shutil.copy(tokenizer_dir / "generation_config.json", out / "generation_config.json")


def png_image(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """An RGB PNG of ``pixel(x, y)`` colours (8 bits a channel), written with
    zlib alone, for tests and benchmarks that send images."""
    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
