"""KV-cache (and activation) dtype on CPU: how soon the greedy text of bf16
and f16 leaves f32's (first differing word), and how fast each decodes. Without paged attention
mistral.rs 0.8.1 keeps the KV cache in the model's dtype, so `dtype` is the
setting. Default GGUF model, 64 greedy tokens per prompt.

Run with `make bench-kv`; writes benches/results/<date>-<host>-kv-dtype.json.
"""

from __future__ import annotations

import json
import os
import statistics
from datetime import date
from pathlib import Path

import machine

from mistralvllm import SamplingParams, Session

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle.",
    "What is the capital of Italy?",
    "Give three tips for learning a language.",
]
MAX_TOKENS = 64
DTYPES = ("f32", "bf16", "f16")


def answers(dtype: str) -> tuple[list[list[str]], float]:
    """The words of each greedy answer, and the median decode speed."""
    with Session(dtype=dtype, device="cpu") as session:  # type: ignore[arg-type]
        words, speeds = [], []
        for prompt in PROMPTS:
            result = session.chat([{"role": "user", "content": prompt}], SamplingParams(max_tokens=MAX_TOKENS))
            speeds.append(result.usage.decode_tok_per_s)
            words.append(result.text.split())
        return words, statistics.median(speeds)


def first_difference(a: list[str], b: list[str]) -> int | None:
    """Index of the first word where the answers differ (None: identical)."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    runs = {dtype: answers(dtype) for dtype in DTYPES}
    reference, _ = runs["f32"]
    results = []
    for dtype, (tokens, speed) in runs.items():
        differences = [first_difference(ref, got) for ref, got in zip(reference, tokens, strict=True)]
        results.append(
            {
                "dtype": dtype,
                "decode_tok_s_median": speed,
                "first_difference_from_f32": differences,
                "identical_to_f32": sum(d is None for d in differences),
            }
        )
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu_count": os.cpu_count(),
        "max_tokens": MAX_TOKENS,
        "prompts": PROMPTS,
        "results": results,
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-kv-dtype.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for row in results:
        print(
            f"{row['dtype']:5} {row['decode_tok_s_median']:6.1f} tok/s  identical to f32: {row['identical_to_f32']}/{len(PROMPTS)}  "
            f"first differing word {row['first_difference_from_f32']}"
        )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
