"""Embeddings against llama.cpp: a model of Qwen3-Embedding-0.6B's shape
(random weights: speed does not depend on the values), served by both
engines, each in its own process, the same thread count:

- llama.cpp: ``llama-server --embeddings --pooling last`` on the GGUF
  (written by `model_shapes`, quantized by ``llama-quantize``);
- ours: ``mistralvllm serve`` on the same weights as a sentence-transformers
  directory (`embedding_model`: last-token pooling, normalized), float32, or
  quantized in situ to the GGUF's type (``MISTRALVLLM_MODEL__ISQ``).

Per type: a batch of BATCH inputs of 8 to 250 words in one ``/v1/embeddings``
request (inputs/s and tokens/s, median of REPETITIONS), one short input
(latency), the server's peak RSS (VmHWM) after both, and the cosine of each
input's vector between the engines (the same weights: near 1).

    make bench-embeddings

Results: benches/results/<date>-<host>-embeddings.json, and the table in
docs/benchmarks.md.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import machine
import numpy as np
import report as report_tables
from embedding_model import write_sentence_transformers
from engines import THREADS, TOPICS
from matrix import BENCH_BIN, free_port, served
from model_shapes import FILES, SHAPES, made, write_random

SHAPE = "qwen3-0.6b"  # Qwen3-Embedding-0.6B has Qwen3-0.6B's shape
TYPES = ("F32", "Q8_0")
BATCH = 32
REPETITIONS = 3
SHORT = "What is the capital of Italy?"
RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- bench-embeddings:start -->", "<!-- bench-embeddings:end -->"


def batch_texts() -> list[str]:
    """BATCH texts of 8 to 250 words, each different."""
    return [" ".join(f"{TOPICS[(i + j) % len(TOPICS)]} {j}" for j in range(4 + (i * 37) % 122)) for i in range(BATCH)]


def embedding_dir(f16: Path) -> Path:
    """The sentence-transformers directory of the F16 GGUF's weights (float32), made once."""
    from mistralvllm import default_model_path
    from mistralvllm.convert import gguf_to_plain, staged_dir

    target = FILES / f"{SHAPE}-embedding"
    if not (target / "config.json").is_file():
        tokenizer_dir = FILES / "smollm2-135m-plain"
        if not (tokenizer_dir / "tokenizer.json").is_file():
            gguf_to_plain(default_model_path(), tokenizer_dir)
        with staged_dir(target) as staging:
            write_sentence_transformers(f16, tokenizer_dir, staging)
    return target


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid}: no VmHWM")


@contextmanager
def server(engine: str, model: Path, type_name: str) -> Any:
    """``engine``'s server on ``model``: its base URL, model name and process id."""
    import httpx

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if engine == "llama-server":
        command = [str(BENCH_BIN / "llama-server"), "-m", str(model), "--embeddings", "--pooling", "last", "-np", "8"]
        command += ["-c", "8192", "-b", "2048", "-ub", "2048", "-t", str(THREADS), "--port", str(port), "--no-webui"]
        environment = None
    else:
        environment = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "MISTRALVLLM_BENCH_VENV")}
        environment["MISTRALVLLM_HISTORY__ENABLED"] = "false"
        if type_name != "F32":
            environment["MISTRALVLLM_MODEL__ISQ"] = type_name
        command = [sys.executable, "-m", "mistralvllm", "serve", str(model), "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        process = served(command, base_url, log, env=environment)
        try:
            yield base_url, httpx.get(f"{base_url}/v1/models", timeout=5).json()["data"][0]["id"], process.pid
        finally:
            process.terminate()
            process.wait(timeout=60)


def embed(base_url: str, model: str, inputs: list[str]) -> tuple[np.ndarray, int, float]:
    """The vectors of ``inputs`` in one request, the prompt tokens counted and the seconds it took."""
    import httpx

    started = time.perf_counter()
    answer = httpx.post(f"{base_url}/v1/embeddings", json={"model": model, "input": inputs}, timeout=3600)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    body = answer.json()
    vectors = np.array([item["embedding"] for item in sorted(body["data"], key=lambda item: item["index"])])
    return vectors, body["usage"]["prompt_tokens"], elapsed


def measure(engine: str, model: Path, type_name: str) -> tuple[dict[str, Any], np.ndarray]:
    texts = batch_texts()
    with server(engine, model, type_name) as (base_url, name, pid):
        embed(base_url, name, texts[:4])  # warm-up
        runs = [embed(base_url, name, texts) for _ in range(REPETITIONS)]
        short = [embed(base_url, name, [SHORT])[2] for _ in range(5)]
        vectors, tokens = runs[0][0], runs[0][1]
        seconds = statistics.median(run[2] for run in runs)
        found = {
            "batch_inputs_s": BATCH / seconds,
            "batch_tok_s": tokens / seconds,
            "prompt_tokens": tokens,
            "short_ms": 1000 * statistics.median(short),
            "peak_rss_mib": peak_rss_mib(pid),
            "batch_seconds_runs": [run[2] for run in runs],
        }
    return found, vectors


def measure_type(type_name: str, directory: Path) -> dict[str, Any]:
    gguf = made(SHAPE, type_name, functools.partial(write_random, SHAPES[SHAPE], default_model()), BENCH_BIN / "llama-quantize", THREADS)
    theirs, their_vectors = measure("llama-server", gguf, type_name)
    ours, our_vectors = measure("mistralvllm", directory, type_name)
    cosines = np.sum(their_vectors * our_vectors, axis=1) / (np.linalg.norm(their_vectors, axis=1) * np.linalg.norm(our_vectors, axis=1))
    return {
        "type": type_name,
        "file_mib": gguf.stat().st_size / 2**20,
        "llama-server": theirs,
        "mistralvllm": ours,
        "cosine_min": float(cosines.min()),
        "cosine_median": float(np.median(cosines)),
        "ratios": {
            "batch": ours["batch_inputs_s"] / theirs["batch_inputs_s"],
            "short": theirs["short_ms"] / ours["short_ms"],
            "peak_rss": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
        },
    }


def default_model() -> Path:
    from mistralvllm import default_model_path

    return default_model_path()


def table(report: dict[str, Any], results: Path, page: Path) -> str:
    """The embeddings table: ours over llama-server, per type."""
    lines = [
        f"Measured {report['date']} on `{report['host']}` ({report['threads']} threads), {report_tables.link(results, page)}: "
        f"{report['like']}'s shape (random weights), a batch of {report['batch']} inputs ({report['cells'][0]['mistralvllm']['prompt_tokens']} "
        "tokens) in one `/v1/embeddings` request and one short input, `mistralvllm serve` (float32 or ISQ) against "
        "`llama-server --embeddings --pooling last -np 8` (the GGUF). Batch: inputs/s, ours over theirs; short input: "
        "their latency over ours; cosine: between the two engines' vectors of the same input.",
        "",
        "| type | batch | batch inputs/s (ours / theirs) | short input | short ms (ours / theirs) | peak RSS | MiB (ours / theirs) | cosine (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        ours, theirs, found = cell["mistralvllm"], cell["llama-server"], cell["ratios"]
        lines.append(
            f"| {cell['type']} | {found['batch']:.2f}× | {ours['batch_inputs_s']:.2f} / {theirs['batch_inputs_s']:.2f} "
            f"| {found['short']:.2f}× | {ours['short_ms']:.0f} / {theirs['short_ms']:.0f} | {found['peak_rss']:.2f}× "
            f"| {ours['peak_rss_mib']:.0f} / {theirs['peak_rss_mib']:.0f} | {cell['cosine_min']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    f16 = made(SHAPE, "F16", functools.partial(write_random, SHAPES[SHAPE], default_model()), BENCH_BIN / "llama-quantize", THREADS)
    directory = embedding_dir(f16)
    cells = []
    for type_name in TYPES:
        cells.append(measure_type(type_name, directory))
        print(json.dumps(cells[-1]["ratios"]), cells[-1]["type"], flush=True)
    report = {
        **machine.described(THREADS),
        "shape": SHAPE,
        "like": "Qwen3-Embedding-0.6B",
        "batch": BATCH,
        "cells": cells,
    }
    results = RESULTS / f"{report['date']}-{report['host']}-embeddings.json"
    results.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {results}")
    report_tables.write_between(report_tables.BENCHMARKS, START, END, table(report, results, report_tables.BENCHMARKS))
    print(table(report, results, report_tables.BENCHMARKS))


if __name__ == "__main__":
    main()
