"""The portable wheel (`make wheel`) against the native build (`make build`).

The wheel is built without `-C target-cpu=native`, so it runs on any
x86-64 CPU; candle's quantized kernels pick their AVX2 code at run time
(patches/candle-core-0.10.2/0001-avx2-kernels-chosen-at-run-time). It also
carries a build for x86-64-v4, which the package loads where the CPU has
AVX-512 (mistralvllm/cpu_builds.py).
This measures what the wheel costs on this machine: decode tok/s and prompt
tok/s, each engine in its own process, and whether the greedy texts are the
same; "wheel" is the build the wheel loads here, "wheel-base" its portable
build, loaded by name (MISTRALVLLM_CPU_BUILD=base). This VM's speed drifts by
tens of percent within minutes, so the engines take turns: ROUNDS rounds of
one process each, the order rotated every round, and each ratio is the median
of the rounds' ratios (a round's processes run seconds apart). First, the wheel
runs once under qemu's user-mode emulation of a CPU without AVX (Nehalem):
it must still answer there, on candle's scalar code, only slower. qemu-user
shows the host's /proc/cpuinfo, so that run names the build such a CPU
chooses (base).

    make bench-wheel   # builds the wheel, installs it into ~/.cache/mistralvllm/wheel-venv

Results go to benches/results/<date>-<host>-wheel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine
from engines import DECODE_TOKENS, FIDELITY_PROMPTS, FIDELITY_TOKENS, SHORT, _session_stream, default_model, long_prompt, timed

REPO = Path(__file__).resolve().parent.parent
WHEEL_PYTHON = Path(os.environ.get("MISTRALVLLM_WHEEL_VENV", Path.home() / ".cache" / "mistralvllm" / "wheel-venv")) / "bin" / "python"
REPETITIONS = 3
FIGURES = ("decode", "prompt")
ROUNDS = 4
# An x86-64 CPU with SSE4.2 and no AVX, emulated by qemu-x86_64 (Debian's qemu-user).
CPU_WITHOUT_AVX2 = "Nehalem"


def measure(model: str) -> dict[str, object]:
    """Decode and prompt speed of the mistralvllm this interpreter imports."""
    import mistralvllm
    from mistralvllm import Session

    with Session(model) as session:
        stream = _session_stream(session)
        prompt_tokens = session.count_tokens(long_prompt(0))
        timed(stream, SHORT, 8)  # warm-up
        decode, prompt = [], []
        for _ in range(REPETITIONS):
            first, last, pieces, _ = timed(stream, SHORT, DECODE_TOKENS)
            decode.append((pieces - 1) / (last - first))
            prompt.append(prompt_tokens / timed(stream, long_prompt(len(prompt)), 1)[0])
        texts = [timed(stream, [{"role": "user", "content": p}], FIDELITY_TOKENS)[3] for p in FIDELITY_PROMPTS]
    return {
        "package": str(Path(mistralvllm.__file__).parent),
        "cpu_build": mistralvllm.CPU_BUILD,
        "decode_tok_s": statistics.median(decode),
        "prompt_tok_s": statistics.median(prompt),
        "greedy_texts": texts,
    }


def measure_one_answer(model: str) -> dict[str, object]:
    """The first fidelity prompt's greedy answer and its decode speed (the
    emulated CPU is too slow for the whole measurement)."""
    from mistralvllm import Session

    with Session(model) as session:
        first, last, pieces, text = timed(_session_stream(session), [{"role": "user", "content": FIDELITY_PROMPTS[0]}], FIDELITY_TOKENS)
    return {"decode_tok_s": (pieces - 1) / (last - first), "greedy_text": text}


# Each contender: its interpreter's venv and the CPU build it is told to load.
CONTENDERS = {
    "native": (None, "auto"),
    "wheel": (WHEEL_PYTHON, "auto"),
    "wheel-base": (WHEEL_PYTHON, "base"),
}


def run(python: str, model: str, *launcher: str, mode: str = "--measure", cpu_build: str = "auto") -> dict[str, object]:
    env = os.environ | {"MISTRALVLLM_CPU_BUILD": cpu_build}
    result = subprocess.run([*launcher, python, __file__, mode, model], capture_output=True, text=True, timeout=1800, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{python}: failed\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measure", metavar="MODEL", help="measure the mistralvllm this interpreter imports and print JSON")
    parser.add_argument("--one-answer", metavar="MODEL", help="one greedy answer and its decode speed, as JSON")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    if args.one_answer:
        print(json.dumps(measure_one_answer(args.one_answer)))
        return
    if not WHEEL_PYTHON.exists():
        raise SystemExit(f"{WHEEL_PYTHON}: no wheel venv; run `make bench-wheel`")
    model = default_model()
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("qemu-x86_64 not found (Debian's qemu-user; `make bench-wheel` installs it)")
    emulated = run(str(WHEEL_PYTHON), model, qemu, "-cpu", CPU_WITHOUT_AVX2, mode="--one-answer", cpu_build="base")
    names = list(CONTENDERS)
    rounds = []
    for number in range(ROUNDS):
        order = names[number % len(names) :] + names[: number % len(names)]
        rounds.append({name: run(str(CONTENDERS[name][0] or sys.executable), model, cpu_build=CONTENDERS[name][1]) for name in order})
    results = {
        name: {
            **{f"{figure}_tok_s": statistics.median(r[name][f"{figure}_tok_s"] for r in rounds) for figure in FIGURES},
            "package": rounds[0][name]["package"],
            "cpu_build": rounds[0][name]["cpu_build"],
            "greedy_texts": rounds[0][name]["greedy_texts"],
        }
        for name in names
    }
    native = results["native"]
    ratios = {
        name: {figure: statistics.median(r[name][f"{figure}_tok_s"] / r["native"][f"{figure}_tok_s"] for r in rounds) for figure in FIGURES}
        for name in names[1:]
    }
    all_texts = [r[name]["greedy_texts"] for r in rounds for name in r]
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu_flags": machine.cpu_flags(),
        "threads": os.cpu_count(),
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "repetitions": REPETITIONS,
        "rounds": [{name: {f"{figure}_tok_s": r[name][f"{figure}_tok_s"] for figure in FIGURES} for name in r} for r in rounds],
        **results,
        "ratios": ratios["wheel"],
        "ratios_by_build": {results[name]["cpu_build"]: ratios[name] for name in names[2:]},
        "same_greedy_texts": sum(len({texts[index] for texts in all_texts}) == 1 for index in range(len(FIDELITY_PROMPTS))),
        "without_avx2": {
            "cpu": f"{CPU_WITHOUT_AVX2} (qemu-x86_64 user-mode emulation)",
            "decode_tok_s": emulated["decode_tok_s"],
            "same_greedy_text_as_native": emulated["greedy_text"] == native["greedy_texts"][0],
        },
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-wheel.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"{name} ({results[name]['cpu_build']} build): decode {results[name]['decode_tok_s']:.1f} tok/s ({ratios[name]['decode']:.2f}x), "
        f"prompt {results[name]['prompt_tok_s']:.1f} tok/s ({ratios[name]['prompt']:.2f}x)"
        for name in names[1:]
    ]
    print(
        f"CPU {' '.join(report['cpu_flags'])}\n"
        f"native: decode {native['decode_tok_s']:.1f} tok/s, prompt {native['prompt_tok_s']:.1f} tok/s\n"
        + "\n".join(lines)
        + f"\n(ratios: medians of {ROUNDS} rounds' ratios to native)\n"
        f"same greedy texts: {report['same_greedy_texts']}/{len(FIDELITY_PROMPTS)}\n"
        f"wheel on an emulated {CPU_WITHOUT_AVX2} (no AVX): decode {emulated['decode_tok_s']:.2f} tok/s, "
        f"same greedy text as native: {report['without_avx2']['same_greedy_text_as_native']}\n{out}"
    )


if __name__ == "__main__":
    main()
