"""The bench matrix: architectures x sizes x quantization types, against llama.cpp's own tools.

Each cell is one GGUF file (`model_shapes`: the bundled SmolLM2-135M with
real weights, the others with random weights of a popular model's shape,
quantized by ``llama-quantize``), measured by both engines, each in its own
process, the same thread count:

- prompt and decode: llama-bench's pp512 and tg128 (its mean of 3 runs), and
  ours over the same counts through `Session` (a 512-token raw prompt, 128
  greedy tokens; medians of 3, the engine's own timings in ``usage``);
- 8 chats at once against llama-server with ``-np 8`` (8 slots, the fair peer
  for concurrent chats), and one chat, through the same OpenAI client code
  against ``mistralvllm serve``: aggregate completion tok/s, wall clock;
- peak RSS of each process (llama-bench's at its pp512/tg128 context; ours
  over the same work, the Python interpreter included, and the interpreter
  with mistralvllm imported reported apart);
- the roofline share: decode tok/s over this machine's copy bandwidth
  divided by the file's bytes (every weight is read once per token).

    make bench-matrix                        # the default cells
    make bench-matrix CELLS="qwen2-0.5b:Q4_K_M llama-135m:Q4_1"
    make bench-matrix CELLS=all              # every shape x every type (hours)
    make bench-matrix CELLS="..." INTO=benches/results/<file>-matrix.json NOTE="after ..."

Results: benches/results/<date>-<host>-matrix.json (benches/report.py makes
the table in docs/benchmarks.md); with INTO, the cells measured replace
those of the same name in an earlier matrix of this host (each marked
``remeasured`` with NOTE), and that file makes the table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import machine
import report as report_tables
from engines import FIDELITY_PROMPTS, FIDELITY_TOKENS, THREADS, TOPICS, memory_bandwidth_gib_s
from gguf_types import write_f16 as dequantized_copy
from model_shapes import REAL_MODELS, SHAPES, made, real_model_file, write_random

REPO = Path(__file__).resolve().parent.parent
BENCH_BIN = Path(os.environ.get("MISTRALVLLM_BENCH_VENV", Path.home() / ".cache" / "mistralvllm" / "bench-venv")) / "bin"
PROMPT_TOKENS, DECODE_TOKENS, REPETITIONS = 512, 128, 3
CHATS, CHAT_TOKENS = 8, 128
TYPES = ("Q4_K_M", "Q4_0", "Q8_0", "Q5_K_M", "Q6_K", "Q4_1")
BUNDLED = "llama-135m"  # the bundled model, real weights
DEFAULT_CELLS = (
    "llama-135m:Q4_1",
    "llama-135m:Q4_K_M",
    "qwen2-0.5b:Q4_K_M",
    "qwen2-0.5b:Q4_0",
    "qwen2-0.5b:Q8_0",
    "qwen2-0.5b:Q6_K",
    "qwen3-0.6b:Q4_K_M",
    "llama-1b:Q4_K_M",
    "qwen2-1.5b:Q4_K_M",
    "qwen2.5-coder-0.5b:Q4_K_M",
    "gemma3-270m:Q4_K_M",
)


def cell_file(shape: str, type_name: str) -> Path:
    """The GGUF of one cell, made on first use (a real model's cell is its file as shipped)."""
    from mistralvllm import default_model_path

    if shape in REAL_MODELS:
        return real_model_file(REAL_MODELS[shape])
    if shape == BUNDLED:
        write_f16 = functools.partial(dequantized_copy, default_model_path())
    else:
        write_f16 = functools.partial(write_random, SHAPES[shape], default_model_path())
    return made(shape, type_name, write_f16, BENCH_BIN / "llama-quantize", THREADS)


def measured(command: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[str, float]:
    """``command``'s standard output and peak RSS in MiB (benches/peak_rss.py); its error text raises."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        launcher = [sys.executable, str(Path(__file__).with_name("peak_rss.py")), rss.name]
        result = subprocess.run([*launcher, *command], capture_output=True, text=True, timeout=timeout, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name}: exit status {result.returncode}: {result.stderr[-1500:]}")
        return result.stdout, int(rss.read()) / 1024


def llama_bench(path: Path) -> dict[str, float]:
    """llama-bench's pp512 and tg128 on ``path`` (mean tok/s of its repetitions) and its peak RSS."""
    command = [str(BENCH_BIN / "llama-bench"), "-m", str(path), "-p", str(PROMPT_TOKENS), "-n", str(DECODE_TOKENS)]
    stdout, rss = measured([*command, "-t", str(THREADS), "-r", str(REPETITIONS), "-o", "json"], timeout=3600)
    runs = json.loads(stdout)
    prompt = next(run for run in runs if run["n_prompt"] > 0 and run["n_gen"] == 0)
    decode = next(run for run in runs if run["n_gen"] > 0 and run["n_prompt"] == 0)
    return {"prompt_tok_s": prompt["avg_ts"], "decode_tok_s": decode["avg_ts"], "peak_rss_mib": rss}


def measure_ours(path: str) -> dict[str, Any]:
    """In this process: a 512-token raw prompt and 128 greedy tokens through
    `Session`, REPETITIONS times (the engine's own timings), as JSON."""
    from mistralvllm import SamplingParams, Session

    with Session(path, prefix_cache=0) as session:
        words = " ".join(f"{TOPICS[i % len(TOPICS)]} {i}" for i in range(PROMPT_TOKENS))
        prompt = session.detokenize(session.tokenize(prompt=words, add_special_tokens=False)[:PROMPT_TOKENS])
        session.complete(prompt[:200], SamplingParams(max_tokens=8))  # warm-up
        prompt_runs, decode_runs, prompt_tokens = [], [], 0
        for repetition in range(REPETITIONS):
            usage = session.complete(f"{repetition} {prompt}", SamplingParams(max_tokens=1)).usage
            prompt_runs.append(usage.prompt_tok_per_s)
            prompt_tokens = usage.prompt_tokens
            answer = session.complete(f"{repetition}. Once upon a time", SamplingParams(max_tokens=DECODE_TOKENS))
            decode_runs.append(answer.usage.decode_tok_per_s)
    return {"prompt_tok_s_runs": prompt_runs, "decode_tok_s_runs": decode_runs, "prompt_tokens": prompt_tokens}


def ours_bench(path: Path) -> dict[str, float]:
    """`measure_ours` in a process of its own: medians and its peak RSS."""
    environment = {key: value for key, value in os.environ.items() if key != "RUST_BACKTRACE"}
    stdout, rss = measured([sys.executable, __file__, "--ours", str(path)], timeout=3600, env=environment)
    runs = json.loads(stdout.strip().splitlines()[-1])
    _, imported_rss = measured([sys.executable, "-c", "import mistralvllm, mistralvllm.session"], timeout=120)
    return {
        "prompt_tok_s": statistics.median(runs["prompt_tok_s_runs"]),
        "decode_tok_s": statistics.median(runs["decode_tok_s_runs"]),
        "peak_rss_mib": rss,
        "python_import_rss_mib": imported_rss,
        "runs": runs,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def has_chat_template(path: Path) -> bool:
    """Whether the GGUF carries a chat template; a base model without one is
    asked through ``/v1/completions`` (raw text) on both servers."""
    from gguf import GGUFReader

    return "tokenizer.chat_template" in GGUFReader(path).fields


def generation(base_url: str, model: str, text: str, max_tokens: int, *, chat: bool, **extra: object) -> dict[str, Any]:
    """One greedy request: ``text`` as a user message, or as the raw prompt of a completion when not ``chat``."""
    import httpx

    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, **extra}
    if chat:
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    reply = httpx.post(f"{base_url}/v1/{'chat/completions' if chat else 'completions'}", json=body, timeout=1800)
    reply.raise_for_status()
    return dict(reply.json())


def chats_per_second(base_url: str, model: str, chats: int, *, chat: bool) -> float:
    """``chats`` chats at once (greedy, CHAT_TOKENS each): completion tokens per wall second."""

    def chat_tokens(i: int) -> int:
        text = f"Write a short poem about {TOPICS[i % len(TOPICS)]}."
        # ignore_eos is llama-server's; ours reads no EOS from random weights in 128 tokens
        reply = generation(base_url, model, text, CHAT_TOKENS, chat=chat, ignore_eos=True)
        return int(reply["usage"]["completion_tokens"])

    chat_tokens(0)  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(chats) as pool:
        tokens = sum(pool.map(chat_tokens, range(chats)))
    return tokens / (time.perf_counter() - started)


def served(command: list[str], base_url: str, log: IO[bytes], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server started from ``command``, once its model is loaded (``/health``
    answers 200 on both servers then, 503 while loading). Its output goes to
    ``log``, a file: a pipe nobody reads would stop a talkative server when full."""
    import httpx

    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{Path(command[0]).name} exited: {log.read().decode(errors='replace')[-1500:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)
    server.kill()
    raise RuntimeError(f"{Path(command[0]).name} did not answer within 10 minutes")


@contextmanager
def running_server(engine: str, path: Path) -> Iterator[tuple[str, str]]:
    """``engine``'s OpenAI-compatible server on ``path``: its base URL and model name."""
    import httpx

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if engine == "llama-server":
        context = CHATS * 1024
        command = [str(BENCH_BIN / "llama-server"), "-m", str(path), "-np", str(CHATS), "-c", str(context), "-t", str(THREADS)]
        command += ["--jinja", "--port", str(port), "--no-webui"]
        environment = None
    else:
        # The service reads MISTRALVLLM_* as config settings: the bench's own variable is not one.
        environment = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "MISTRALVLLM_BENCH_VENV")}
        environment["MISTRALVLLM_HISTORY__ENABLED"] = "false"
        command = [sys.executable, "-m", "mistralvllm", "serve", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        server = served(command, base_url, log, env=environment)
        try:
            yield base_url, httpx.get(f"{base_url}/v1/models", timeout=5).json()["data"][0]["id"]
        finally:
            server.terminate()
            server.wait(timeout=60)


def server_chats(engine: str, path: Path) -> dict[str, float]:
    """Aggregate tok/s of one chat and of CHATS at once through ``engine``'s server."""
    chat = has_chat_template(path)
    with running_server(engine, path) as (base_url, model):
        one, many = (chats_per_second(base_url, model, count, chat=chat) for count in (1, CHATS))
        return {"one_chat_tok_s": one, f"{CHATS}_chats_tok_s": many}


def greedy_answers(engine: str, path: Path) -> list[str]:
    """``engine``'s first FIDELITY_TOKENS greedy tokens of an answer to each
    of FIDELITY_PROMPTS (of the raw prompt's continuation for a base model)."""
    chat = has_chat_template(path)
    answers = []
    with running_server(engine, path) as (base_url, model):
        for prompt in FIDELITY_PROMPTS:
            choice = generation(base_url, model, prompt, FIDELITY_TOKENS, chat=chat)["choices"][0]
            answers.append(choice["message"]["content"] if chat else choice["text"])
    return answers


def greedy_agreement(name: str) -> dict[str, Any]:
    """A real model's greedy answers from both servers, and on how many prompts they are the same."""
    path = real_model_file(REAL_MODELS[name])
    ours, peer = greedy_answers("mistralvllm-serve", path), greedy_answers("llama-server", path)
    same = sum(a == b for a, b in zip(ours, peer, strict=True))
    return {"model": name, "like": REAL_MODELS[name].like, "prompts": FIDELITY_PROMPTS, "ours": ours, "llama-server": peer, "same": same}


def measure_cell(cell: str, bandwidth_gib_s: float, *, servers: bool) -> dict[str, Any]:
    """Both engines on one cell's file, with the ratios the issue asks for."""
    from gguf import GGUFReader

    shape, type_name = cell.split(":")
    path = cell_file(shape, type_name)
    row: dict[str, Any] = {"cell": cell, "shape": shape, "type": type_name, "file_mib": path.stat().st_size / 2**20}
    row["tensor_types"] = dict(sorted(Counter(tensor.tensor_type.name for tensor in GGUFReader(path).tensors).items()))
    for name, run in (("llama-bench", llama_bench), ("mistralvllm", ours_bench)):
        try:
            row[name] = run(path)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            row[name] = {"error": str(e)}
    if servers:
        for name in ("llama-server", "mistralvllm-serve"):
            try:
                row[name] = server_chats(name, path)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                row[name] = {"error": str(e)}
    row["roofline_decode_tok_s"] = bandwidth_gib_s * 2**30 / path.stat().st_size
    row["ratios"] = ratios(row)
    return row


def ratios(row: dict[str, Any]) -> dict[str, float]:
    """Ours over the peer for each figure both engines have."""
    ours, peer = row.get("mistralvllm", {}), row.get("llama-bench", {})
    found: dict[str, float] = {}
    for key in ("prompt_tok_s", "decode_tok_s"):
        if key in ours and key in peer:
            found[key] = ours[key] / peer[key]
    if "peak_rss_mib" in ours and "peak_rss_mib" in peer:
        found["peak_rss"] = ours["peak_rss_mib"] / peer["peak_rss_mib"]
    if "decode_tok_s" in ours:
        found["roofline_share"] = ours["decode_tok_s"] / row["roofline_decode_tok_s"]
    serve, server = row.get("mistralvllm-serve", {}), row.get("llama-server", {})
    chats = f"{CHATS}_chats_tok_s"
    if chats in serve and chats in server:
        found[f"{CHATS}_chats"] = serve[chats] / server[chats]
        found[f"{CHATS}_chats_over_one"] = serve[chats] / serve["one_chat_tok_s"]
        found[f"peer_{CHATS}_chats_over_one"] = server[chats] / server["one_chat_tok_s"]
    return found


def ratio_text(found: dict[str, float], key: str, width: int) -> str:
    """One ratio for the table, or a dash where a figure is missing."""
    return f"{found[key]:>{width}.2f}" if key in found else f"{'-':>{width}}"


def table(rows: list[dict[str, Any]]) -> str:
    """The cells as text: ours / llama.cpp per figure."""
    lines = [f"{'cell':22} {'MiB':>6} {'prompt':>7} {'decode':>7} {'8 chats':>8} {'8/1':>5} {'RSS':>5} {'roofline':>8}"]
    for row in rows:
        found = row["ratios"]
        figures = [("prompt_tok_s", 7), ("decode_tok_s", 7), (f"{CHATS}_chats", 8), (f"{CHATS}_chats_over_one", 5)]
        figures += [("peak_rss", 5), ("roofline_share", 8)]
        lines.append(f"{row['cell']:22} {row['file_mib']:>6.0f} " + " ".join(ratio_text(found, key, width) for key, width in figures))
    return "\n".join(lines)


def merged_matrix(matrix: dict[str, Any], run: dict[str, Any], note: str) -> dict[str, Any]:
    """``matrix`` with the cells of a later ``run`` on the same host in place
    of its cells of the same name (new cells appended), each marked
    ``remeasured`` with ``note``; the run's greedy answers, when it checked
    them, replace the matrix's; ``remeasured`` at the top lists each merge."""
    if run["host"] != matrix["host"]:
        raise ValueError(f"cells measured on {run['host']} cannot join a matrix of {matrix['host']}")
    fresh = {cell["cell"]: {**cell, "remeasured": note} for cell in run["cells"]}
    cells = [fresh.pop(cell["cell"], cell) for cell in matrix["cells"]]
    merged = {**matrix, "cells": cells + list(fresh.values())}
    if run["greedy_agreement"]:
        merged["greedy_agreement"] = run["greedy_agreement"]
    merged["remeasured"] = [
        *matrix.get("remeasured", []),
        {"note": note, "date": run["date"], "cells": [cell["cell"] for cell in run["cells"]], "copy_bandwidth_gib_s": run["copy_bandwidth_gib_s"]},
    ]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", metavar="GGUF", help="measure our engine on this file here and print JSON (used by the driver)")
    parser.add_argument("--cells", default="", help="shape:TYPE ... (default: DEFAULT_CELLS; 'all': every shape x type)")
    parser.add_argument("--no-servers", action="store_true", help="leave out the 8-chat server runs")
    parser.add_argument("--no-greedy", action="store_true", help="leave out the real models' greedy answers against llama-server")
    parser.add_argument("--into", metavar="JSON", type=Path, help="merge the cells measured into this earlier matrix of this host")
    parser.add_argument("--note", default="", help="with --into: why the cells were measured again (kept with each)")
    args = parser.parse_args()
    if args.into and not (args.into.is_file() and args.note):
        raise SystemExit(f"--into {args.into}: needs an existing matrix file and a --note saying why the cells were re-measured")
    if args.ours:
        print(json.dumps(measure_ours(args.ours)))
        return
    if args.cells.strip() == "all":
        cells = [f"{shape}:{type_name}" for shape in (BUNDLED, *SHAPES) for type_name in TYPES]
    else:
        cells = args.cells.split() or list(DEFAULT_CELLS)
    unknown = [cell for cell in cells if cell.count(":") != 1 or cell.split(":")[0] not in (BUNDLED, *SHAPES, *REAL_MODELS)]
    if unknown:
        raise SystemExit(f"unknown cells {unknown}; shapes: {', '.join((BUNDLED, *SHAPES, *REAL_MODELS))}; types: {', '.join(TYPES)}")
    bandwidth = memory_bandwidth_gib_s()
    greedy = [greedy_agreement(name) for name in REAL_MODELS] if not args.no_greedy else []
    for check in greedy:
        same = f"{check['same']} of {len(check['prompts'])}"
        print(f"{check['model']}: the same first {FIDELITY_TOKENS} greedy tokens as llama-server on {same} prompts")
    rows = []
    for cell in cells:
        rows.append(measure_cell(cell, bandwidth, servers=not args.no_servers))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    report = {
        **machine.described(THREADS),
        "copy_bandwidth_gib_s": bandwidth,
        "prompt_tokens": PROMPT_TOKENS,
        "decode_tokens": DECODE_TOKENS,
        "chats": CHATS,
        "chat_tokens": CHAT_TOKENS,
        "shapes": {
            BUNDLED: {"like": "SmolLM2-135M-Instruct, the bundled model", "architecture": "llama"},
            **{name: {"like": f"{model.like}, real weights", "architecture": model.architecture} for name, model in REAL_MODELS.items()},
            **{
                name: {"like": f"random weights, {s.like}'s shape", "architecture": s.architecture, "parameters": s.parameters()}
                for name, s in SHAPES.items()
            },
        },
        "greedy_agreement": greedy,
        "cells": rows,
    }
    if args.into:
        out = args.into
        report = merged_matrix(json.loads(out.read_text()), report, args.note)
    else:
        out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-matrix.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows))
    report_tables.write_matrix_table(out)
    print(f"ours / llama.cpp (llama-bench pp{PROMPT_TOKENS} tg{DECODE_TOKENS}; llama-server -np {CHATS}); {THREADS} threads; written to {out}")


if __name__ == "__main__":
    main()
