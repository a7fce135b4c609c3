"""Every GGUF architecture computes what a float64 numpy forward pass of the
same weights computes (Gemma 3's loader is ours: patches/mistralrs-core-0.8.1/0017-*): tiny random models of each (the bench matrix's
writer, benches/model_shapes.py, with Q8_0 matrices) scored by the engine
and by benches/reference_forward.py. This covers what the loaders share:
token embeddings kept quantized on the CPU and looked up row by row, tied
output weights that are the embedding's tensor, and a KV cache kept in f16
(patches/mistralrs-core-0.8.1/0011-*, 0012-*)."""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from mistralvllm import SamplingParams, Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import reference_forward
from fidelity import TEXT, compare
from model_shapes import ModelShape, SentencePieceVocabulary, write_random

from model_makers import tiny_gguf

TOKENS = 40
# Tiny shapes of each architecture the reference computes, with the bundled
# model's 49152-token vocabulary; qwen3's heads are wider than hidden/heads,
# as Qwen3's are, and one llama keeps an output layer of its own.
SHAPES = [
    ModelShape("tiny-qwen2", "qwen2", 128, 2, 4, 2, 256, 49152),
    ModelShape("tiny-qwen3", "qwen3", 128, 2, 4, 2, 256, 49152, head_dim=64),
    ModelShape("tiny-llama-untied", "llama", 128, 2, 4, 2, 256, 49152, tied=False, rope_theta=10_000.0),
    # Six layers: five attend to a window of 8 positions (fewer than TOKENS), the sixth to all.
    ModelShape("tiny-gemma3", "gemma3", 128, 6, 4, 1, 256, 49152, head_dim=64, tied=False, sliding_window=8),
]
GEMMA3 = SHAPES[-1]


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


def test_gemma3_decodes_past_its_sliding_window_as_the_reference(default_model: Path) -> None:
    """Each decoded token's distribution, read from the KV cache through the
    window's mask, is the reference's over the whole sequence so far: the
    prompt and the answer together run well past the window."""
    path = tiny_gguf(GEMMA3, default_model)
    prompt = "The weather"
    with Session(path, prefix_cache=0) as session:
        prompt_tokens = session.tokenize(prompt=prompt)
        answer = session.complete(prompt, SamplingParams(max_tokens=3 * GEMMA3.sliding_window, logprobs=True, top_logprobs=5))
    answer_tokens = [position.top_logprobs[0].token_id for position in answer.logprobs]
    assert len(prompt_tokens) < GEMMA3.sliding_window < len(answer_tokens)
    reference = reference_forward.log_probabilities(reference_forward.load(path), prompt_tokens + answer_tokens)
    differences = [
        abs(top.logprob - reference[len(prompt_tokens) - 1 + step, top.token_id])
        for step, position in enumerate(answer.logprobs)
        for top in position.top_logprobs
    ]
    assert max(differences) < 0.05, differences  # 0.018 measured; without the window 0.37


# Rotary tables start with this many positions and grow with the sequences
# (patches/mistralrs-core-0.8.1/0025-*).
FIRST_ROPE_POSITIONS = 4096


def test_positions_past_the_first_rotary_tables_are_scored_as_the_reference(default_model: Path) -> None:
    """A sequence longer than the rotary tables a model loads with: the
    tables grow, and the positions past them are scored as close to the
    reference as the positions just before them."""
    path = tiny_gguf(SHAPES[0], default_model)
    span = 64
    with Session(path, prefix_cache=0) as session:
        text = session.tokenize(prompt=TEXT)
        tokens = (text * (FIRST_ROPE_POSITIONS // len(text) + 2))[: FIRST_ROPE_POSITIONS + span + 1]
        scores = np.asarray(session.score(tokens))  # of tokens[1:]
    model = reference_forward.load(path)
    first = FIRST_ROPE_POSITIONS - span
    logits = reference_forward.hidden_states(model, tokens)[first:-1] @ model.output.astype(np.float64).T
    logits -= logits.max(axis=-1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    targets = log_probabilities[np.arange(2 * span), tokens[first + 1 :]]
    differences = np.abs(targets - scores[first:])
    within, past = differences[:span].max(), differences[span:].max()
    # The tiny model's log-probabilities are large (around -100): measured
    # within 0.57, past 0.38.
    assert past < 2 * within + 0.05, (within, past)


USER_DEFINED = "  "
PIECES_TEXT = "The quick brown fox jumps over the lazy dog. The old bakery in town sells the best bread, and the baker knows everyone by name."
# Prompts of those words, with runs of spaces and a character outside the vocabulary (byte fallback).
SENTENCEPIECE_PROMPTS = ["The baker sells bread", " the lazy  fox", "Everyone knows the café by name.", "brown dog"]


def sentencepiece_vocabulary(add_space_prefix: bool) -> SentencePieceVocabulary:
    """Control tokens, the 256 byte pieces, a user-defined piece of two raw
    spaces (as Gemma's), PIECES_TEXT's characters and 300 of its substrings
    (seeded), scored in a random order."""
    rng = random.Random(20261207)
    escaped = PIECES_TEXT.replace(" ", "\u2581")
    substrings = sorted({escaped[i : i + n] for n in range(2, 7) for i in range(len(escaped) - n + 1)})
    pieces = sorted(set(escaped)) + rng.sample(substrings, 300)
    scores = [-float(rank) for rank in rng.sample(range(len(pieces)), len(pieces))]
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", *(f"<0x{byte:02X}>" for byte in range(256)), USER_DEFINED, *pieces]
    types = [3] * 4 + [6] * 256 + [4] + [1] * len(pieces)
    return SentencePieceVocabulary(tokens, [0.0] * 261 + scores, types, bos=2, eos=1, unk=3, add_space_prefix=add_space_prefix)


def llama_cpp_sentencepiece(vocabulary: SentencePieceVocabulary, text: str) -> list[int]:
    """llama.cpp's SentencePiece tokenization (``llm_tokenizer_spm``), plainly:
    BOS; the raw text split at the user-defined piece; in each other part
    (after a space piece where ``add_space_prefix`` says so), the characters
    merged pair by pair, the merged piece of highest score first (the leftmost
    of equals), and byte pieces for what is left outside the vocabulary."""
    ids = {token: i for i, token in enumerate(vocabulary.tokens)}
    tokens = [vocabulary.bos]
    for n, part in enumerate(text.split(USER_DEFINED)):
        if n:
            tokens.append(ids[USER_DEFINED])
        if not part:
            continue
        symbols = list(("\u2581" if vocabulary.add_space_prefix else "") + part.replace(" ", "\u2581"))
        while True:
            merges = [(vocabulary.scores[ids[a + b]], -i) for i, (a, b) in enumerate(itertools.pairwise(symbols)) if a + b in ids]
            if not merges:
                break
            i = -max(merges)[1]
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        for symbol in symbols:
            tokens += [ids[symbol]] if symbol in ids else [ids[f"<0x{byte:02X}>"] for byte in symbol.encode()]
    return tokens


@pytest.mark.parametrize("add_space_prefix", [False, True], ids=["no space prefix (Gemma)", "space prefix (Llama 2)"])
def test_a_sentencepiece_gguf_tokenizes_as_llama_cpp(default_model: Path, tmp_path: Path, add_space_prefix: bool) -> None:
    """A GGUF's SentencePiece vocabulary (patches/mistralrs-core-0.8.1/0018-*)
    splits text as llama.cpp does, BOS first, and decodes back to the text
    (the user-defined piece included: Gemma's runs of newlines are text)."""
    vocabulary = sentencepiece_vocabulary(add_space_prefix)
    shape = ModelShape("tiny-gemma3-sentencepiece", "gemma3", 64, 1, 2, 1, 128, len(vocabulary.tokens), head_dim=32, sliding_window=8)
    path = tmp_path / "sentencepiece.gguf"
    write_random(shape, default_model, path, matrix_type="Q8_0", sentencepiece=vocabulary)
    with Session(path, prefix_cache=0) as session:
        for prompt in SENTENCEPIECE_PROMPTS:
            tokens = session.tokenize(prompt=prompt)
            assert tokens == llama_cpp_sentencepiece(vocabulary, prompt), prompt
            if not (add_space_prefix and USER_DEFINED in prompt):  # a space piece follows the user-defined piece there
                assert session.detokenize(tokens[1:]) == prompt
        answer = session.complete("The baker", SamplingParams(max_tokens=4))
    assert answer.usage.prompt_tokens == len(llama_cpp_sentencepiece(vocabulary, "The baker"))
