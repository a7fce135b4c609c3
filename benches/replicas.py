"""One `mistralvllm serve` against two replicas on the same machine, both
layouts writing one PostgreSQL history (README, "More than one machine").

Clients spread their requests round-robin over the replicas, as a load
balancer would; each client keeps its own conversation (X-Conversation-Id).
Three layouts: one replica with every core; two replicas with half the cores
each (RAYON_NUM_THREADS); two replicas with every core each (what a user gets
without setting anything). Figures: aggregate decode tok/s and per-request
latency at 1, 8 and 16 concurrent streams, and every turn found in the
database afterwards.

Run with `make bench-replicas` (needs `make postgres`); writes
benches/results/<date>-<host>-replicas.json.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import machine
import openai
from service_vs_session import MAX_TOKENS, PROMPTS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from postgres_server import start_postgres  # noqa: E402
from service import API_KEY, MODEL, Server, start_server, stored_turns  # noqa: E402

REPETITIONS = 3
CONCURRENCY = (1, 8, 16)
CORES = os.cpu_count() or 1
LAYOUTS = {
    "1 replica": (1, None),
    "2 replicas, half the cores each": (2, max(1, CORES // 2)),
    "2 replicas, every core each": (2, None),
}


def start_replicas(tmp: Path, url: str, count: int, threads: int | None) -> list[Server]:
    extra_env = {"RAYON_NUM_THREADS": str(threads)} if threads else {}
    servers: list[Server] = []
    try:
        for _ in range(count):
            servers.append(start_server(tmp, history=url, extra_env=extra_env))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def measure(servers: list[Server], layout: str) -> tuple[dict[int, dict[str, float]], int]:
    """Figures per concurrency (medians over REPETITIONS) and the number of requests sent."""
    clients = [openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=600) for server in servers]
    conversation = re.sub(r"[^A-Za-z0-9]+", "-", layout)
    sent = 0

    def ask(request: int) -> tuple[int, float]:
        started = time.perf_counter()
        stream = clients[request % len(clients)].chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPTS[request % len(PROMPTS)]}],
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Conversation-Id": f"{conversation}-{request}"},
        )
        tokens = next(chunk.usage.completion_tokens for chunk in stream if chunk.usage is not None)
        return tokens, time.perf_counter() - started

    for warm in range(len(clients)):
        ask(warm)
    sent += len(clients)
    figures = {}
    for concurrency in CONCURRENCY:
        rates, latencies = [], []
        for _ in range(REPETITIONS):
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                results = list(pool.map(ask, range(concurrency)))
            rates.append(sum(tokens for tokens, _ in results) / (time.perf_counter() - started))
            latencies += [latency for _, latency in results]
            sent += concurrency
        figures[concurrency] = {
            "aggregate_tok_s": statistics.median(rates),
            "latency_s_median": statistics.median(latencies),
            "latency_s_max": max(latencies),
        }
    return figures, sent


def main() -> None:
    postgres = start_postgres()
    results = []
    try:
        for layout, (count, threads) in LAYOUTS.items():
            url = postgres.new_database()
            with tempfile.TemporaryDirectory() as tmp:
                servers = start_replicas(Path(tmp), url, count, threads)
                try:
                    figures, sent = measure(servers, layout)
                finally:
                    for server in servers:
                        server.stop()
            stored = sum(1 for turns in stored_turns(url).values() for turn in turns if turn["role"] == "assistant")
            if stored != sent:
                raise SystemExit(f"{layout}: {sent} requests answered but {stored} answers stored in the history")
            for concurrency, row in figures.items():
                results.append({"layout": layout, "replicas": count, "rayon_threads": threads or CORES, "concurrency": concurrency, **row})
    finally:
        postgres.stop()
    one = {row["concurrency"]: row["aggregate_tok_s"] for row in results if row["layout"] == "1 replica"}
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu_count": CORES,
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "history": "PostgreSQL (one database per layout, every answer stored)",
        "max_tokens": MAX_TOKENS,
        "repetitions": REPETITIONS,
        "results": results,
        "tok_s_over_one_replica": {
            layout: {str(n): row["aggregate_tok_s"] / one[n] for row in results if row["layout"] == layout for n in [row["concurrency"]]}
            for layout in LAYOUTS
        },
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-replicas.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'layout':34} {'streams':>7} {'tok/s':>8} {'latency p50':>12} {'latency max':>12}")
    for row in results:
        print(
            f"{row['layout']:34} {row['concurrency']:>7} {row['aggregate_tok_s']:>8.1f} "
            f"{row['latency_s_median']:>11.2f}s {row['latency_s_max']:>11.2f}s"
        )
    print("tok/s over one replica:", {k: {n: round(v, 2) for n, v in d.items()} for k, d in report["tok_s_over_one_replica"].items()})
    print(f"written to {out}")


if __name__ == "__main__":
    main()
