"""Time to first token of a repeated long system prompt, with the prefix
cache on (the default) and off, on the bundled model.

    make bench-prefix

Each run loads a session, asks two questions under the same ~600-token
system prompt and clocks the first streamed piece of each; medians of
REPETITIONS sessions. Results go to benches/results/<date>-<host>-prefix-cache.json.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import date
from pathlib import Path

import machine

from mistralvllm import SamplingParams, Session

REPO = Path(__file__).resolve().parent.parent
REPETITIONS = 3
SYSTEM = " ".join(
    f"Rule {n}: answer politely, briefly and truthfully, and say so when you do not know something about topic number {n}." for n in range(1, 21)
)
QUESTIONS = ["What is the capital of France?", "What is the capital of Spain?"]


def time_to_first_token(session: Session, question: str) -> tuple[float, int]:
    started = time.perf_counter()
    stream = session.stream([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}], SamplingParams(max_tokens=8))
    next(stream)
    first = time.perf_counter() - started
    prompt_tokens = 0
    for chunk in stream:
        if chunk.usage is not None:
            prompt_tokens = chunk.usage.prompt_tokens
    return first, prompt_tokens


def measure(prefix_cache: int) -> dict[str, float]:
    firsts, seconds, tokens = [], [], 0
    for _ in range(REPETITIONS):
        with Session(prefix_cache=prefix_cache) as session:
            first, tokens = time_to_first_token(session, QUESTIONS[0])
            second, _ = time_to_first_token(session, QUESTIONS[1])
            firsts.append(first)
            seconds.append(second)
    return {"prompt_tokens": tokens, "first_ttft_s": statistics.median(firsts), "second_ttft_s": statistics.median(seconds)}


def main() -> None:
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "repetitions": REPETITIONS,
        "prefix_cache_on": measure(16),
        "prefix_cache_off": measure(0),
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-prefix-cache.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for mode in ("prefix_cache_on", "prefix_cache_off"):
        r = report[mode]
        print(f"{mode:17} {r['prompt_tokens']} prompt tokens: first request {r['first_ttft_s']:.2f} s, second {r['second_ttft_s']:.2f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
