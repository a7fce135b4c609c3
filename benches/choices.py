"""``n`` answers in one request against ``n`` separate requests at once, on
the bundled model: aggregate tok/s of the answers, median of REPETITIONS.

    make bench-choices

Both ways the engine decodes the n sequences together (continuous
batching); one request with ``n`` saves the client's n round trips and
submits the n sequences at once. Sampled (temperature 0.8, seeded),
MAX_TOKENS each. Results go to benches/results/<date>-<host>-choices.json.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import machine

from mistralvllm import SamplingParams, Session

REPO = Path(__file__).resolve().parent.parent
REPETITIONS = 3
CHOICES = 4
MAX_TOKENS = 64
QUESTION = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
SAMPLING = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.8)


def one_request(session: Session, seed: int) -> float:
    """Aggregate tok/s of CHOICES answers from one request (n=CHOICES)."""
    started = time.perf_counter()
    result = session.chat(QUESTION, SAMPLING.replace(seed=seed), n=CHOICES)
    elapsed = time.perf_counter() - started
    return sum(choice.usage.completion_tokens for choice in result.choices) / elapsed


def separate_requests(session: Session, seed: int) -> float:
    """Aggregate tok/s of CHOICES requests sent at once from as many threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(CHOICES) as pool:
        results = list(pool.map(lambda i: session.chat(QUESTION, SAMPLING.replace(seed=seed + i)), range(CHOICES)))
    elapsed = time.perf_counter() - started
    return sum(result.usage.completion_tokens for result in results) / elapsed


def main() -> None:
    with Session() as session:
        session.chat(QUESTION, SamplingParams(max_tokens=4))  # warm-up
        n_request = [one_request(session, 100 + r) for r in range(REPETITIONS)]
        separate = [separate_requests(session, 200 + r) for r in range(REPETITIONS)]
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "choices": CHOICES,
        "max_tokens": MAX_TOKENS,
        "repetitions": REPETITIONS,
        "n_request_tok_s": statistics.median(n_request),
        "separate_requests_tok_s": statistics.median(separate),
        "ratio": statistics.median(n_request) / statistics.median(separate),
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-choices.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"n={CHOICES} in one request: {report['n_request_tok_s']:.1f} tok/s; "
        f"{CHOICES} separate requests at once: {report['separate_requests_tok_s']:.1f} tok/s ({report['ratio']:.2f}x)\n{out}"
    )


if __name__ == "__main__":
    main()
