"""Numerical fidelity of each engine against a float64 reference, without ties.

Counting how many greedy answers equal llama.cpp's (benches/engines.py) flips
on near-ties. This compares whole next-token distributions instead: over a
fixed text of a few hundred tokens, a numpy float64 forward pass of the same
GGUF weights (benches/reference_forward.py) gives the next-token distribution
at every position; each engine gives its own for the same tokens (teacher
forcing), and the figures are the mean and max KL(reference || engine) over
the positions and the fraction of positions where both rank the same token
first. The weights are the engines' own quantized ones, so this measures the
engines' arithmetic, not the quantization.

    make bench-fidelity

Each engine runs in its own process (this script with --engine, its
distributions in a temporary .npy file):
- mistralvllm: Session.score_distributions (one forced decoding step per token);
- llama-cpp-python: Llama(logits_all=True).eval(tokens), one batch;
- mistralrs (PyPI): it has no call that scores given tokens, nor logprobs on
  completions; a chat request can return logprobs of all 49152 tokens
  (top_logprobs), so each position is one request whose prompt is the text's
  first tokens, with a chat template that writes the text as it is.
The seconds per engine include loading and are no speed comparison (the
mistralrs route answers one request per position).

Results go to benches/results/<date>-<host>-fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import machine
import numpy as np

REPO = Path(__file__).resolve().parent.parent
PEER_PYTHON = Path(os.environ.get("MISTRALVLLM_BENCH_VENV", Path.home() / ".cache" / "mistralvllm" / "bench-venv")) / "bin" / "python"
THREADS = 2
TEXT = (
    "The lighthouse at the end of the harbour was built in 1862 from granite blocks cut on the island itself. "
    "Its first keeper, a former sailor named Thomas Reed, lived there with his wife and three children, and "
    "every evening at sunset he climbed the ninety-four steps to light the lamp. The lamp burned whale oil at "
    "first, then paraffin, and finally, after 1931, electricity brought across the water by a cable laid on the "
    "sea bed. In the logbook he kept, Reed wrote down the weather, the ships that passed, and the birds that "
    "struck the glass on foggy nights.\n"
    "Today the light is automatic and nobody lives in the tower. A small museum in the keeper's cottage shows "
    "the old lenses, which were made in Paris and weigh more than two tonnes. Visitors can climb to the gallery "
    "between April and October; on a clear day they can see the mountains on the mainland, about forty "
    "kilometres away. The guides like to explain how a Fresnel lens works: instead of one thick piece of glass, "
    "it uses many thin rings, each bending the light a little, so that the beam stays narrow and bright while "
    "the lens stays light enough to turn. A clockwork motor once turned it; now a quiet electric one does.\n"
    "Questions that children often ask: How far can the light be seen? About twenty nautical miles. "
    "Why does it flash? So that sailors can tell one lighthouse from another by counting the seconds between flashes."
)
# No blank lines in TEXT: our engine's GGUF tokenizer (mistral.rs 0.8.1 applies
# Llama 3's pre-tokenizer to every BPE GGUF) reads "\n\n" before a word as one
# token where SmolLM2's own tokenizer, llama.cpp and PyPI mistralrs read two,
# and mistralrs is given text (see mistralrs_peer): the text must read back as
# the same tokens everywhere.
MISTRALRS_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"

EngineFn = Callable[[str, list[int], int], np.ndarray]


def ours(model: str, tokens: list[int], vocabulary: int) -> np.ndarray:
    """Session.score_distributions: one forced decoding step per token."""
    from mistralvllm import Session

    with Session(model) as session:
        rows = session.score_distributions(tokens)
    return np.stack([np.frombuffer(row, "<f4") for row in rows])


def llamacpp(model: str, tokens: list[int], vocabulary: int) -> np.ndarray:
    """Llama(logits_all=True).eval(tokens): the text in one batch."""
    from llama_cpp import Llama

    llm = Llama(model_path=model, logits_all=True, n_threads=THREADS, n_threads_batch=THREADS, n_ctx=len(tokens) + 16, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens) - 1], dtype=np.float32)


def mistralrs_peer(model: str, tokens: list[int], vocabulary: int) -> np.ndarray:
    """One chat request per position, its prompt the text's first tokens as
    they are, top_logprobs over the whole vocabulary (its prefix cache
    reuses the shorter prompts' KV)."""
    import mistralrs

    path = Path(model)
    with tempfile.NamedTemporaryFile("w", suffix=".jinja") as template:
        template.write(MISTRALRS_TEMPLATE)
        template.flush()
        runner = mistralrs.Runner(
            which=mistralrs.Which.GGUF(tok_model_id=None, quantized_model_id=str(path.parent), quantized_filename=path.name),
            no_paged_attn=True,
            token_source="none",
            jinja_explicit=template.name,
        )
    rows = []  # a row's tokens missing from the answer stay -inf: an infinite KL, not a hidden one
    for end in range(1, len(tokens)):
        prefix = runner.detokenize_text(tokens[:end], skip_special_tokens=False)
        if runner.tokenize_text(prefix, add_special_tokens=False, enable_thinking=None) != tokens[:end]:
            raise RuntimeError(f"mistralrs: the text of the first {end} tokens reads back as other tokens")
        request = mistralrs.ChatCompletionRequest(
            model="default",
            messages=[{"role": "user", "content": prefix}],
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=vocabulary,
        )
        response = runner.send_chat_completion_request(request)
        if response.usage.prompt_tokens != end:
            raise RuntimeError(f"mistralrs: a prompt of {end} tokens was read as {response.usage.prompt_tokens}")
        row = np.full(vocabulary, -np.inf, dtype=np.float32)
        for entry in response.choices[0].logprobs.content[0].top_logprobs:
            row[entry.token] = entry.logprob
        rows.append(row)
    return np.stack(rows)


ENGINES: dict[str, EngineFn] = {"mistralvllm": ours, "llama-cpp-python": llamacpp, "mistralrs": mistralrs_peer}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Rows of natural-log probabilities (float64) from logits or unnormalized log-probabilities."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_divergence(reference: np.ndarray, engine: np.ndarray) -> np.ndarray:
    """KL(reference || engine) in nats at each position (rows of log-probabilities)."""
    p = np.exp(reference)
    return np.sum(p * (reference - engine), axis=-1)


def compare(reference: np.ndarray, engine: np.ndarray, tokens: list[int]) -> dict[str, object]:
    """Mean and max KL(reference || engine), top-1 agreement, and where the
    top tokens differ, the reference's log-probability gap between its first
    choice and the engine's (a near-tie when small)."""
    kl = kl_divergence(reference, engine)
    reference_top, engine_top = reference.argmax(axis=-1), engine.argmax(axis=-1)
    positions = np.arange(len(reference))
    targets = np.asarray(tokens[1:])
    return {
        "kl_mean": float(kl.mean()),
        "kl_median": float(np.median(kl)),
        "kl_max": float(kl.max()),
        "kl_max_position": int(kl.argmax()),
        "top1_agreement": float(np.mean(reference_top == engine_top)),
        "top1_disagreements": [
            {"position": int(i), "reference_gap": float(reference[i, reference_top[i]] - reference[i, engine_top[i]])}
            for i in positions[reference_top != engine_top]
        ],
        "perplexity": math.exp(-float(engine[positions, targets].mean())),
    }


def measure(name: str, model: str, tokens_file: str, out_file: str) -> None:
    """Run one engine here: its log-probabilities to ``out_file``; its method
    and the seconds it took, loading included, as JSON on stdout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    text = json.loads(Path(tokens_file).read_text())
    started = time.perf_counter()
    rows = ENGINES[name](model, text["tokens"], text["vocabulary"])
    if rows.shape != (len(text["tokens"]) - 1, text["vocabulary"]):
        raise RuntimeError(f"{name}: distributions of shape {rows.shape}, expected {(len(text['tokens']) - 1, text['vocabulary'])}")
    np.save(out_file, rows)
    print(json.dumps({"engine": name, "method": ENGINES[name].__doc__, "seconds": time.perf_counter() - started}))


def run_engine(name: str, model: str, tokens: list[int], vocabulary: int, scratch: Path) -> tuple[np.ndarray | None, dict[str, object]]:
    """One engine in its own process: its log-probabilities (None if it failed) and its timing or error."""
    python = sys.executable if name == "mistralvllm" else str(PEER_PYTHON)
    tokens_file, out_file = scratch / "tokens.json", scratch / f"{name}.npy"
    tokens_file.write_text(json.dumps({"tokens": tokens, "vocabulary": vocabulary}))
    command = [python, __file__, "--engine", name, "--model", model, "--tokens", str(tokens_file), "--out", str(out_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        return None, {"engine": name, "error": f"exit status {result.returncode}: {result.stderr[-2000:]}"}
    return log_softmax(np.load(out_file)), json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=sorted(ENGINES), help="run one engine here (used by the driver)")
    parser.add_argument("--model")
    parser.add_argument("--tokens", help="JSON file: the token ids and the vocabulary size")
    parser.add_argument("--out", help=".npy file for the engine's log-probabilities")
    args = parser.parse_args()
    if args.engine:
        measure(args.engine, args.model, args.tokens, args.out)
        return

    import reference_forward

    from mistralvllm import Session, default_model_path

    model = str(default_model_path())
    with Session(model) as session:
        tokens = session.tokenize(prompt=TEXT)
        score_perplexity = math.exp(-float(np.mean(session.score(tokens))))
    started = time.perf_counter()
    reference_model = reference_forward.load(model)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    reference = reference_forward.log_probabilities(reference_model, tokens)[:-1]
    pass_s = time.perf_counter() - started
    targets = reference[np.arange(len(reference)), tokens[1:]]
    self_check = {
        "load_s": load_s,
        "pass_s": pass_s,
        "perplexity": math.exp(-float(targets.mean())),
        "session_score_perplexity": score_perplexity,
        "rope_theta": reference_model.shape.rope_theta,
        "rms_norm_eps": reference_model.shape.rms_norm_eps,
    }
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in ENGINES:
            distributions, row = run_engine(name, model, tokens, reference.shape[1], Path(scratch))
            if distributions is not None:
                row |= compare(reference, distributions, tokens)
            rows.append(row)
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "text": TEXT,
        "tokens": len(tokens),
        "positions": len(reference),
        "reference": self_check,
        "engines": rows,
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-fidelity.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{len(tokens)} tokens; reference: load {load_s:.1f}s, pass {pass_s:.1f}s, perplexity {self_check['perplexity']:.3f} "
        f"(Session.score: {score_perplexity:.3f})"
    )
    print(f"{'engine':18} {'KL mean':>10} {'KL median':>10} {'KL max':>10} {'top-1':>7} {'perplexity':>11} {'seconds':>8}")
    for row in rows:
        if "error" in row:
            print(f"{row['engine']:18} failed: {str(row['error']).strip().splitlines()[-1]}")
            continue
        print(
            f"{row['engine']:18} {row['kl_mean']:>10.5f} {row['kl_median']:>10.5f} {row['kl_max']:>10.5f} "
            f"{row['top1_agreement']:>7.3f} {row['perplexity']:>11.3f} {row['seconds']:>8.1f}"
        )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
