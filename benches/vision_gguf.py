"""A Gemma 3 vision model as llama.cpp reads it: the text model as a GGUF of
architecture ``gemma3`` and the SigLIP tower with Gemma 3's projector as an
mmproj GGUF (clip.cpp's projector type ``gemma3``), for ``llama-mtmd-cli -m
text.gguf --mmproj mmproj.gguf`` and ``llama-server --mmproj``: the peer of
an image prompt on the same model.

The source is a directory in Hugging Face's layout: benches/vision_model.py's
tiny model (any shape `write_gemma3_vision` writes) or a real Gemma 3
directory, float32, bfloat16 or float16 safetensors in one file or shards,
tensors named either ``language_model.model.*`` / ``vision_tower.*`` /
``multi_modal_projector.*`` or (transformers 4.52 on) ``model.language_model.*``
and so on. The values are the safetensors' own, in their own precision, with
the changes llama.cpp's converter makes (convert_hf_to_gguf.py,
conversion/gemma.py ``Gemma3Model`` and ``Gemma3VisionModel``, in the
llama.cpp vendored by the pinned llama-cpp-python):

- Gemma's RMS norms scale by 1 + weight, llama.cpp's by the weight: every
  text norm weight (``*norm.weight``) and the projector's ``soft_emb_norm``
  are written with the 1 added; SigLIP's layer norms are plain LayerNorms,
  written as they are;
- norms, biases and the patch and position embeddings in F32; the projection
  ``mm.input_projection.weight`` in F16 (the converter forces it) unless the
  source is float32, where it stays F32 so the values are exactly the
  safetensors'; its (vision hidden, text hidden) layout is the one clip.cpp
  multiplies by (``ggml_mul_mat(ggml_transpose(mm_input_proj_w), cur)``), so
  it is not transposed; the patch convolution keeps its (out, in, kh, kw)
  layout (``ggml_conv_2d``'s kernel);
- tensor names and keys by gguf-py's own tables (its tensor map and its
  writer's ``add_vision_*``/``add_clip_*`` keys, the converter's), which are
  the names tools/mtmd/clip-impl.h and src/models/gemma3.cpp ask for;
- the token embedding cut to the tokenizer's size.

Beyond the converter: the text GGUF carries ``gemma3.attention.sliding_window_pattern``
(llama.cpp's gemma3 loader defaults to a global layer in six; the tiny model
has one in two), and the mmproj always carries the pooling kernel
(``clip.vision.projector.scale_factor``: patches a side / soft tokens a side;
clip.cpp assumes 4 without it). mistral.rs's own GGUF gemma3 loader
(quantized_gemma3.rs) reads neither that pattern nor ``rope.freq_base_swa``
(it assumes one in six and 10000): the text GGUF of a model with another
pattern, as the tiny one, is not the same model there; the benchmark runs
mistral.rs on the safetensors directory.

The tokenizer: a GPT-2 BPE tokenizer.json (SmolLM2's, for the tiny model) as
``tokenizer.ggml.model = gpt2`` with its merges, added special tokens as
control tokens (so ``<start_of_image>`` and ChatML's ``<|im_start|>`` are one
token each); a directory with a SentencePiece tokenizer.model (real Gemma 3)
as ``llama`` the way the converter writes it (needs the sentencepiece
package). bos/eos/pad, add_bos and the chat template come from
tokenizer_config.json through gguf-py's SpecialVocab.

The prompt. mistral.rs's Gemma 3 processor expands an image's
``<start_of_image>`` into ``\\n\\n<start_of_image>`` + soft tokens +
``<end_of_image>\\n\\n``; libmtmd puts ``<start_of_image>`` + the image's
embeddings + ``<end_of_image>`` where the media marker stands, after the
chat template: `mtmd_user_content` is the user text that gives llama.cpp
the same tokens.

What llama.cpp's gemma3 path can run (the same vendored source):
- square inputs: an image is resized to image_size x image_size (bilinear,
  padded to keep its aspect ratio, where mistral.rs stretches: the same for a
  square image), and ``clip_graph_siglip`` asserts as many patches across as
  down;
- any image_size and patch size: the position embedding is used as it is,
  the token count is (image_size / patch_size / kernel)^2, with the kernel
  from ``clip.vision.projector.scale_factor`` (not a fixed 256 or 4x4);
  patches a side must be a multiple of the kernel;
- a vision feed-forward as wide as the hidden size cannot load: clip.cpp
  takes ``ffn_down`` with hidden-size rows as an old file's swapped up/down
  and swaps them back;
- the text model's query scale is 1/sqrt(head_dim) (1/sqrt(hidden/heads) at
  62 layers): a ``query_pre_attn_scalar`` other than that cannot be written.

Usage: python benches/vision_gguf.py MODEL_DIR OUT_DIR  (writes OUT_DIR/text.gguf and OUT_DIR/mmproj.gguf)
"""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from model_shapes import ModelShape, add_shape_metadata, tensor_shapes, written_whole

if TYPE_CHECKING:
    import gguf

# libmtmd's media marker (mtmd_default_marker()).
MTMD_MARKER = "<__media__>"
# numpy's view of each safetensors dtype (bfloat16 as its bits).
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def write_out(writer: gguf.GGUFWriter, tensors: dict[str, tuple[Any, Any]]) -> None:
    """Add ``tensors`` (name: values and their raw GGML type) and write the file."""
    for name, (values, raw_dtype) in tensors.items():
        writer.add_tensor(name, values, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def mtmd_user_content(text: str) -> str:
    """A user message for llama-mtmd-cli (``-p``) or llama-server's chat: the
    image then ``text``, spaced as mistral.rs's Gemma 3 processor spaces it
    (``\\n\\n`` before ``<start_of_image>`` and after ``<end_of_image>``, which
    libmtmd adds around the marker), so both engines see the same tokens."""
    return f"\n\n{MTMD_MARKER}\n\n{text}"


@dataclass(frozen=True)
class Source:
    """One tensor of the safetensors: its dtype and values, mapped from the file."""

    dtype: str  # F32, F16 or BF16
    values: np.ndarray[Any, Any]  # bfloat16 as uint16 bits

    def float32(self) -> np.ndarray[Any, Any]:
        if self.dtype == "BF16":
            return (self.values.astype(np.uint32) << 16).view(np.float32)
        return self.values.astype(np.float32)


def safetensors(model_dir: Path) -> dict[str, Source]:
    """Every tensor of the directory's *.safetensors (one file or shards),
    read through a memory map (nothing is copied until written)."""
    tensors: dict[str, Source] = {}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors")
    for path in files:
        data = np.memmap(path, dtype=np.uint8, mode="r")
        (length,) = struct.unpack("<Q", data[:8].tobytes())
        header = json.loads(data[8 : 8 + length].tobytes())
        start = 8 + length
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in SAFETENSORS_DTYPES:
                raise ValueError(f"{path.name}: {name} is {info['dtype']}; F32, F16 and BF16 are read")
            begin, end = info["data_offsets"]
            values = data[start + begin : start + end].view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
            tensors[canonical_name(name)] = Source(info["dtype"], values)
    return tensors


def canonical_name(name: str) -> str:
    """A tensor's name in the older Gemma3ForConditionalGeneration layout
    (``language_model.model.*``, ``vision_tower.*``, ``multi_modal_projector.*``)."""
    for new, old in (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("lm_head.", "language_model.lm_head."),
    ):
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def stored(source: Source, name: str, *, f32: bool = False) -> tuple[np.ndarray[Any, Any], Any]:
    """The array and raw GGML type to write: F32 for what llama.cpp keeps in
    float32 (``f32``, 1-D tensors), else the source's own precision."""
    from gguf import GGMLQuantizationType

    if f32 or source.values.ndim <= 1:
        return source.float32(), None
    if source.dtype == "BF16":
        return source.values, GGMLQuantizationType.BF16
    return source.values, None


def file_type(sources: list[Source]) -> int:
    """general.file_type by the matrices' precision."""
    from gguf import LlamaFileType

    kinds = {source.dtype for source in sources if source.values.ndim > 1}
    if kinds <= {"F32"}:
        return int(LlamaFileType.ALL_F32)
    return int(LlamaFileType.MOSTLY_BF16 if "BF16" in kinds else LlamaFileType.MOSTLY_F16)


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The text model's hyperparameters with Gemma3TextConfig's defaults for
    what a real config.json leaves out (as the converter assumes them)."""
    text = {
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "max_position_embeddings": 131072,
        "final_logit_softcapping": None,
        "rope_scaling": None,
        "tie_word_embeddings": config.get("tie_word_embeddings", True),
    }
    text.update(config.get("text_config", {}))
    text.setdefault("query_pre_attn_scalar", text["head_dim"])
    return text


def sliding_pattern(text: dict[str, Any]) -> int | list[bool]:
    """gemma3.attention.sliding_window_pattern: every n-th layer global (the
    config's sliding_window_pattern), or one flag a layer where the config's
    ``layer_types`` follow no such period."""
    layers = text["num_hidden_layers"]
    if "layer_types" not in text:
        return int(text["sliding_window_pattern"])
    sliding = [kind == "sliding_attention" for kind in text["layer_types"]]
    for period in range(1, layers + 1):
        if sliding == [(i + 1) % period != 0 for i in range(layers)]:
            return period
    return sliding


def vocabulary(model_dir: Path, text: dict[str, Any]) -> tuple[str, str, list[str], list[int], list[float] | None]:
    """The tokenizer as a GGUF carries it: (tokenizer.ggml.model, pre, tokens,
    token types, scores or None), from tokenizer.model (SentencePiece, as the
    converter's _set_vocab_sentencepiece) where there is one, else from a GPT-2
    BPE tokenizer.json."""
    from gguf import TokenType

    if (model_dir / "tokenizer.model").is_file():
        try:
            from sentencepiece import SentencePieceProcessor
        except ImportError as error:
            raise SystemExit(f"{model_dir}/tokenizer.model needs the sentencepiece package") from error
        processor = SentencePieceProcessor()
        processor.LoadFromFile(str(model_dir / "tokenizer.model"))
        size = int(text.get("vocab_size") or processor.vocab_size())
        tokens = [f"[PAD{i}]" for i in range(size)]
        scores = [-10000.0] * size
        types = [int(TokenType.UNUSED)] * size
        for i in range(min(size, processor.vocab_size())):
            tokens[i], scores[i] = processor.IdToPiece(i), processor.GetScore(i)
            kind = TokenType.NORMAL
            if processor.IsUnknown(i):
                kind = TokenType.UNKNOWN
            elif processor.IsControl(i):
                kind = TokenType.CONTROL
            elif processor.IsUnused(i):
                kind = TokenType.UNUSED
            elif processor.IsByte(i):
                kind = TokenType.BYTE
            types[i] = int(kind)
        added_file = model_dir / "added_tokens.json"
        for content, token_id in (json.loads(added_file.read_text()) if added_file.is_file() else {}).items():
            if token_id < size:
                tokens[token_id], scores[token_id], types[token_id] = content, -1000.0, int(TokenType.USER_DEFINED)
        config_file = model_dir / "tokenizer_config.json"
        added = json.loads(config_file.read_text()).get("added_tokens_decoder", {}) if config_file.is_file() else {}
        for key, token in added.items():
            if int(key) < size:
                special = token.get("special", False)
                content = token["content"] if special else token["content"].replace("\u2581", " ")
                tokens[int(key)], scores[int(key)] = content, -1000.0
                types[int(key)] = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        return "llama", "default", tokens, types, scores

    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    model = tokenizer["model"]
    if model["type"] != "BPE" or model.get("byte_fallback") or (tokenizer.get("decoder") or {}).get("type") != "ByteLevel":
        raise ValueError(f"{model_dir}/tokenizer.json is not a GPT-2 (byte-level) BPE and there is no tokenizer.model")
    by_id = {token_id: token for token, token_id in model["vocab"].items()}
    kinds = dict.fromkeys(by_id, int(TokenType.NORMAL))
    for added in tokenizer.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = int(TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{model_dir}/tokenizer.json: token ids are not 0..{len(by_id) - 1}")
    return "gpt2", bpe_pre(tokenizer), [by_id[i] for i in range(len(by_id))], [kinds[i] for i in range(len(by_id))], None


def bpe_pre(tokenizer: dict[str, Any]) -> str:
    """tokenizer.ggml.pre for a byte-level BPE, by its pre-tokenizer: GPT-2's
    regex alone is ``gpt2``; single digits split first, then GPT-2's regex, is
    ``smollm`` (SmolLM's, llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM)."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = [(step["type"], step.get("individual_digits"), step.get("use_regex")) for step in pre.get("pretokenizers", [pre])]
    if steps == [("Digits", True, None), ("ByteLevel", None, True)]:
        return "smollm"
    if steps == [("ByteLevel", None, True)]:
        return "gpt2"
    raise ValueError(f"no llama.cpp pre-tokenizer known for {pre}")


def write_text_gguf(model_dir: Path, tensors: dict[str, Source], target: Path) -> None:
    """The language model as a ``gemma3`` GGUF at ``target``."""
    import gguf

    config = json.loads((model_dir / "config.json").read_text())
    text = text_config(config)
    hidden, heads, layers, head_dim = text["hidden_size"], text["num_attention_heads"], text["num_hidden_layers"], text["head_dim"]
    scale_dim = hidden // heads if layers == 62 else head_dim  # llama.cpp's gemma3 query scale
    if text["query_pre_attn_scalar"] != scale_dim:
        raise ValueError(f"query_pre_attn_scalar {text['query_pre_attn_scalar']}: llama.cpp's gemma3 scales queries by 1/sqrt({scale_dim})")
    tokenizer_model, pre, tokens, types, scores = vocabulary(model_dir, text)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, layers)
    out: dict[str, tuple[np.ndarray[Any, Any], Any]] = {}
    sources = []
    for name, source in tensors.items():
        if not name.startswith("language_model."):
            continue
        if name == "language_model.lm_head.weight" and text["tie_word_embeddings"]:
            continue
        gguf_name = names.get_name(name.removeprefix("language_model."), try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{name}: no gemma3 GGUF name")
        if gguf_name == "token_embd.weight":
            if len(source.values) < len(tokens):
                raise ValueError(f"{name} has {len(source.values)} rows for {len(tokens)} tokens")
            source = Source(source.dtype, source.values[: len(tokens)])
        if gguf_name.endswith("norm.weight"):
            out[gguf_name] = source.float32() + np.float32(1.0), None  # Gemma3RMSNorm: x * (1 + w)
        else:
            out[gguf_name] = stored(source, gguf_name)
        sources.append(source)

    shape = ModelShape(
        str(config.get("_name_or_path") or model_dir.name),
        "gemma3",
        hidden,
        layers,
        heads,
        text["num_key_value_heads"],
        text["intermediate_size"],
        len(tokens),
        head_dim=head_dim,
        tied="output.weight" not in out,
        rope_theta=float(text["rope_theta"]),
        context=text["max_position_embeddings"],
        sliding_window=text["sliding_window"],
    )
    expected = dict(tensor_shapes(shape))
    got = {name: tuple(values.shape) for name, (values, _) in out.items()}
    if got != expected:
        raise ValueError(f"{model_dir}: tensors differ from the gemma3 layout: {sorted(set(got.items()) ^ set(expected.items()))}")

    writer = gguf.GGUFWriter(target, "gemma3")
    writer.add_name(shape.name)
    writer.add_file_type(file_type(sources))
    add_shape_metadata(writer, shape, rms_eps=float(text["rms_norm_eps"]))
    writer.add_rope_freq_base_swa(float(text["rope_local_base_freq"]))
    writer.add_key_length(shape.key_dim)
    writer.add_value_length(shape.key_dim)
    writer.add_rope_dimension_count(shape.key_dim)
    writer.add_sliding_window(int(text["sliding_window"]))
    writer.add_sliding_window_pattern(sliding_pattern(text))
    if text["final_logit_softcapping"]:
        writer.add_final_logit_softcapping(float(text["final_logit_softcapping"]))
    scaling = text["rope_scaling"] or {}
    if scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif scaling:
        raise ValueError(f"rope_scaling {scaling}: llama.cpp's gemma3 reads linear scaling or none")
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is not None:
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(False)
    gguf.SpecialVocab(model_dir, load_merges=tokenizer_model == "gpt2", n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    write_out(writer, out)


def pooling_kernel(config: dict[str, Any], vision: dict[str, Any], model_dir: Path) -> int:
    """Patches a side over soft tokens a side: the average pool's kernel."""
    tokens = config.get("mm_tokens_per_image")
    for name in ("processor_config.json", "preprocessor_config.json"):
        if tokens is None and (model_dir / name).is_file():
            tokens = json.loads((model_dir / name).read_text()).get("image_seq_length")
    tokens = int(tokens or 256)
    per_side = int(vision["image_size"]) // int(vision["patch_size"])
    tokens_per_side = math.isqrt(tokens)
    if tokens_per_side**2 != tokens or per_side % tokens_per_side:
        raise ValueError(f"{per_side}x{per_side} patches do not pool into {tokens} tokens")
    return per_side // tokens_per_side


def write_mmproj_gguf(model_dir: Path, tensors: dict[str, Source], target: Path) -> None:
    """The SigLIP tower and the projector as clip.cpp's ``gemma3`` mmproj at ``target``."""
    import gguf

    config = json.loads((model_dir / "config.json").read_text())
    text = text_config(config)
    vision = {"num_channels": 3, "layer_norm_eps": 1e-6, **config["vision_config"]}
    preprocessor = json.loads((model_dir / "preprocessor_config.json").read_text())
    if vision["intermediate_size"] == vision["hidden_size"]:
        # clip.cpp takes an ffn_down of hidden-size rows for an old file's swapped up/down, and swaps them.
        raise ValueError("a vision intermediate_size equal to its hidden_size does not load in clip.cpp")

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, vision["num_hidden_layers"])
    # The patch and position embeddings stay F32 (the converter's tensor_force_quant).
    embeddings = tuple(gguf.TENSOR_NAMES[kind] for kind in (gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH, gguf.MODEL_TENSOR.V_ENC_EMBD_POS))
    out: dict[str, tuple[np.ndarray[Any, Any], Any]] = {}
    sources = []
    for name, source in tensors.items():
        if not name.startswith(("vision_tower.", "multi_modal_projector.")) or "vision_model.head." in name:
            continue
        hf_name = name.replace("_weight", ".weight")  # mm_input_projection_weight, as the converter
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{name}: no mmproj GGUF name")
        if gguf_name == gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MM_SOFT_EMB_NORM] + ".weight":
            out[gguf_name] = source.float32() + np.float32(1.0), None  # Gemma3RMSNorm: x * (1 + w)
        elif gguf_name == gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MM_INP_PROJ] + ".weight" and source.dtype != "F32":
            out[gguf_name] = source.float32().astype(np.float16), None  # the converter's F16
        else:
            out[gguf_name] = stored(source, gguf_name, f32=gguf_name.startswith(embeddings))
        sources.append(source)
    projection = out.get(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MM_INP_PROJ] + ".weight")
    if projection is None or projection[0].shape != (vision["hidden_size"], text["hidden_size"]):
        raise ValueError(f"{model_dir}: no ({vision['hidden_size']}, {text['hidden_size']}) mm_input_projection_weight")

    writer = gguf.GGUFWriter(target, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name(f"{config.get('_name_or_path') or model_dir.name} (mmproj)")
    writer.add_file_type(file_type(sources))
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(gguf.VisionProjectorType.GEMMA3)
    writer.add_vision_projection_dim(text["hidden_size"])
    writer.add_vision_image_size(vision["image_size"])
    writer.add_vision_patch_size(vision["patch_size"])
    writer.add_vision_embedding_length(vision["hidden_size"])
    writer.add_vision_feed_forward_length(vision["intermediate_size"])
    writer.add_vision_block_count(vision["num_hidden_layers"])
    writer.add_vision_head_count(vision["num_attention_heads"])
    writer.add_vision_attention_layernorm_eps(float(vision["layer_norm_eps"]))
    writer.add_vision_image_mean([float(v) for v in preprocessor["image_mean"]])
    writer.add_vision_image_std([float(v) for v in preprocessor["image_std"]])
    writer.add_vision_use_gelu(True)  # gelu_pytorch_tanh
    writer.add_vision_projector_scale_factor(pooling_kernel(config, vision, model_dir))
    write_out(writer, out)


def write_vision_ggufs(model_dir: Path, out: Path) -> tuple[Path, Path]:
    """``out``/text.gguf and ``out``/mmproj.gguf from the Gemma 3 vision
    directory ``model_dir``; their paths."""
    tensors = safetensors(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    text, mmproj = out / "text.gguf", out / "mmproj.gguf"
    with written_whole(text) as target:
        write_text_gguf(model_dir, tensors, target)
    with written_whole(mmproj) as target:
        write_mmproj_gguf(model_dir, tensors, target)
    return text, mmproj


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for path in write_vision_ggufs(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
