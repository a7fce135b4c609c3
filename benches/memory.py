"""Where mistralvllm's memory goes, stage by stage (issue 16: our peak RSS
against llama.cpp's in benches/engines.py).

One process, one `mistralvllm.Session` on the default model, runs what
engines.py runs before it reads its peak RSS, with its prompts and streaming
(imported from it), each stage once: load, a warm-up chat, a 128-token
decode, the long (~584-token) prompt, 1, 2, 4, 8 and 16 concurrent chats of
64 tokens; then glibc's malloc_trim(0), to show what the heap keeps unused.
Per stage: VmRSS at its end and the stage's own peak (VmHWM, reset through
/proc/self/clear_refs at its start), RssAnon and RssFile; glibc's mallinfo2
(bytes in use in its arenas, free bytes they keep, chunks mmapped on their
own); the engine's prefix-cache and KV-cache figures (`engine_stats`).
`peak_rss_mib`, the highest stage peak, is engines.py's peak RSS figure.

    make bench-memory   # env -u RUST_BACKTRACE .venv/bin/python benches/memory.py

Run it without RUST_BACKTRACE, as engines.py runs every engine (its
engine_env): with it, errors the engine builds and discards while loading
capture backtraces and load the extension's debug info (~57 MiB).
Results go to benches/results/<date>-<host>-memory.json.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine
from engines import CONCURRENCY, CONCURRENT_TOKENS, DECODE_TOKENS, SHORT, _session_stream, concurrent, long_prompt, timed

if TYPE_CHECKING:
    from mistralvllm import Session

REPO = Path(__file__).resolve().parent.parent
MIB = 2**20
# /proc/self/status fields (kB) and their names here.
STATUS_FIELDS = {"VmRSS": "rss_mib", "VmHWM": "stage_peak_mib", "RssAnon": "anon_mib", "RssFile": "file_mib"}
CACHE_FIELDS = ("prefix_cache_sequences", "kv_cache_tokens", "kv_cache_blocks_used", "kv_cache_blocks")
# The printed columns (pc: prefix cache); the JSON has every figure.
TABLE = {
    "rss_mib": "rss",
    "stage_peak_mib": "peak",
    "anon_mib": "anon",
    "file_mib": "file",
    "heap_in_use_mib": "in use",
    "heap_free_kept_mib": "free kept",
    "mmapped_mib": "mmapped",
    "prefix_cache_sequences": "pc seqs",
    "prefix_cache_mib": "pc MiB",
    "kv_cache_tokens": "kv tokens",
}
MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
Row = dict[str, Any]
T = TypeVar("T")


class Mallinfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (malloc.h)."""

    _fields_ = tuple((name, ctypes.c_size_t) for name in MALLINFO2_FIELDS)


LIBC = ctypes.CDLL(None)
LIBC.mallinfo2.restype = Mallinfo2


def process_memory_mib() -> Row:
    """VmRSS, VmHWM (the peak since its last reset), RssAnon and RssFile, in MiB."""
    figures: Row = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            figures[STATUS_FIELDS[key]] = int(value.split()[0]) / 1024
    return figures


def malloc_figures_mib() -> Row:
    """glibc's heap: bytes in use in its arenas, free bytes they keep, bytes in chunks mmapped on their own."""
    info = LIBC.mallinfo2()
    return {"heap_in_use_mib": info.uordblks / MIB, "heap_free_kept_mib": info.fordblks / MIB, "mmapped_mib": info.hblkhd / MIB}


def cache_figures(session: Session) -> Row:
    """The engine's prefix cache and KV cache as of its last step."""
    stats = session.engine_stats()
    return {key: stats[key] for key in CACHE_FIELDS} | {"prefix_cache_mib": stats["prefix_cache_bytes"] / MIB}


def run_stage(name: str, work: Callable[[], T]) -> tuple[T, Row]:
    """Run ``work`` with the peak RSS reset at its start (proc(5): clear_refs 5):
    its result, and the process's memory figures at its end."""
    Path("/proc/self/clear_refs").write_text("5")
    started = time.perf_counter()
    result = work()
    return result, {"stage": name, "seconds": time.perf_counter() - started, **process_memory_mib(), **malloc_figures_mib()}


def cell(value: object) -> str:
    """A table cell: MiB to one decimal, counts as they are, "-" for none (no session yet)."""
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def print_table(rows: list[Row]) -> None:
    """One line per stage with the TABLE columns."""
    print(f"{'stage (MiB)':32}" + "".join(f"{title:>10}" for title in TABLE.values()))
    for row in rows:
        print(f"{row['stage']:32}" + "".join(f"{cell(row.get(key)):>10}" for key in TABLE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix-cache", type=int, default=None, help="finished sequences kept for reuse (Session's default: 16; 0: off)")
    parser.add_argument("--max-num-seqs", type=int, default=32, help="sequences the engine runs at once (Session's default: 32)")
    args = parser.parse_args()

    mistralvllm, row = run_stage("import mistralvllm", lambda: importlib.import_module("mistralvllm"))
    rows = [row]
    model = mistralvllm.default_model_path()
    session, row = run_stage("load", lambda: mistralvllm.Session(model, max_num_seqs=args.max_num_seqs, prefix_cache=args.prefix_cache))
    rows.append(row | cache_figures(session))
    stream = _session_stream(session)
    long_prompt_tokens = session.count_tokens(long_prompt(0))
    stages: list[tuple[str, Callable[[], object]]] = [
        ("warm-up chat (8 tokens)", lambda: timed(stream, SHORT, 8)),
        (f"decode {DECODE_TOKENS} tokens", lambda: timed(stream, SHORT, DECODE_TOKENS)),
        (f"long prompt ({long_prompt_tokens} tokens)", lambda: timed(stream, long_prompt(0), 1)),
        *((f"{clients} concurrent x {CONCURRENT_TOKENS} tokens", lambda c=clients: concurrent(stream, c, False)) for clients in CONCURRENCY),
        ("after malloc_trim(0)", lambda: LIBC.malloc_trim(0)),
    ]
    for name, work in stages:
        _, row = run_stage(name, work)
        rows.append(row | cache_figures(session))
    session.close()

    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "model": str(model),
        "prefix_cache": args.prefix_cache,
        "max_num_seqs": args.max_num_seqs,
        "rust_backtrace": os.environ.get("RUST_BACKTRACE"),
        "long_prompt_tokens": long_prompt_tokens,
        "peak_rss_mib": max(row["stage_peak_mib"] for row in rows),
        "stages": rows,
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-memory.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(rows)
    print(f"peak RSS {report['peak_rss_mib']:.0f} MiB (pc: prefix cache; RUST_BACKTRACE={report['rust_backtrace']})")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
