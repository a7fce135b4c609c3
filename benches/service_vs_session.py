"""HTTP service vs direct `Session`: aggregate decode speed and per-request
latency at 1 and 8 concurrent streams, same model, prompts and greedy settings.

Run with `make bench-service`; writes benches/results/<date>-<host>-service.json.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import machine
import openai

from mistralvllm import SamplingParams, Session

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle.",
    "Write a poem about autumn leaves.",
]
MAX_TOKENS = 64
REPETITIONS = 3
CONCURRENCY = (1, 8)


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def measure(ask, concurrency: int) -> dict[str, float]:
    """Run `concurrency` requests at once REPETITIONS times; median figures."""
    rates, latencies = [], []
    for _ in range(REPETITIONS):
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(ask, range(concurrency)))
        elapsed = time.perf_counter() - started
        rates.append(sum(tokens for tokens, _ in results) / elapsed)
        latencies += [latency for _, latency in results]
    return {"aggregate_tok_s": statistics.median(rates), "latency_s_median": statistics.median(latencies), "latency_s_max": max(latencies)}


def session_figures() -> dict[int, dict[str, float]]:
    with Session() as session:
        session.chat(messages(0), SamplingParams(max_tokens=8))

        def ask(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            result = session.chat(messages(i), SamplingParams(max_tokens=MAX_TOKENS))
            return result.usage.completion_tokens, time.perf_counter() - started

        return {n: measure(ask, n) for n in CONCURRENCY}


def http_figures() -> dict[int, dict[str, float]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MISTRALVLLM_HISTORY__ENABLED": "false", "XDG_DATA_HOME": tmp}
        server = subprocess.Popen(
            [sys.executable, "-m", "mistralvllm", "serve", "--config", str(REPO / "config" / "config.json"), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
            model = client.models.list().data[0].id

            def ask(i: int) -> tuple[int, float]:
                started = time.perf_counter()
                stream = client.chat.completions.create(
                    model=model, messages=messages(i), max_tokens=MAX_TOKENS, stream=True, stream_options={"include_usage": True}
                )
                tokens = next(c.usage.completion_tokens for c in stream if c.usage is not None)
                return tokens, time.perf_counter() - started

            ask(0)
            return {n: measure(ask, n) for n in CONCURRENCY}
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    session = session_figures()
    http = http_figures()
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu_count": os.cpu_count(),
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "max_tokens": MAX_TOKENS,
        "repetitions": REPETITIONS,
        "results": [
            {"engine": engine, "concurrency": n, **figures[n]} for engine, figures in (("session", session), ("http", http)) for n in CONCURRENCY
        ],
        "http_over_session_tok_s": {str(n): http[n]["aggregate_tok_s"] / session[n]["aggregate_tok_s"] for n in CONCURRENCY},
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-service.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'engine':8} {'streams':>7} {'tok/s':>8} {'latency p50':>12} {'latency max':>12}")
    for row in report["results"]:
        print(
            f"{row['engine']:8} {row['concurrency']:>7} {row['aggregate_tok_s']:>8.1f} "
            f"{row['latency_s_median']:>11.2f}s {row['latency_s_max']:>11.2f}s"
        )
    print("http / session tok/s:", {k: round(v, 3) for k, v in report["http_over_session_tok_s"].items()})
    print(f"written to {out}")


if __name__ == "__main__":
    main()
