"""Decode and prompt tok/s per GGUF quantization type, against llama.cpp on the same files.

Users bring GGUFs of every common type, not only the bundled model's Q4_1, so
each type's kernels count. The files, made once under
~/.cache/mistralvllm/models/gguf-types/: the bundled SmolLM2-135M-Instruct
dequantized to F16 with the gguf package (metadata and tokenizer copied as they
are), then quantized into each of TYPES by llama.cpp's own quantizer
(llama-cpp-python's llama_model_quantize, in the bench venv). llama.cpp picks
some tensors' types itself: token_embd (tied output) gets the output's type,
and K types need 256-element blocks, so SmolLM2's 576-wide rows fall back
(Q2_K and Q3_K to IQ4_NL, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0) and only
ffn_down (1536-wide) is K-quantized: each file's tensor-type histogram is kept.

Per type, each engine runs in its own process with benches/engines.py's
runners, prompts and timing (its thread count, greedy): decode tok/s (128 new
tokens) and prompt tok/s (its long prompt), medians of 3. A file an engine
cannot load gets its error text instead of figures.

    make bench-gguf-types   # results in benches/results/<date>-<host>-gguf-types.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import machine
from engines import DECODE_TOKENS, ENGINES, PEER_PYTHON, REPETITIONS, SHORT, THREADS, long_prompt, timed
from model_shapes import written_whole

REPO = Path(__file__).resolve().parent.parent
FILES = Path.home() / ".cache" / "mistralvllm" / "models" / "gguf-types"
TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K")
OURS, LLAMACPP = "mistralvllm", "llama-cpp-python"


def write_f16(source: Path, target: Path) -> None:
    """``source`` dequantized into ``target``: matrices F16, vectors (norms)
    F32, every metadata key and tokenizer array copied as it is."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys, LlamaFileType
    from gguf.quants import dequantize

    reader = GGUFReader(source)
    writer = GGUFWriter(target, reader.fields[Keys.General.ARCHITECTURE].contents())
    for field in reader.fields.values():
        # The architecture and the GGUF.* header fields are the writer's own; the file type changes.
        if field.name in (Keys.General.ARCHITECTURE, Keys.General.FILE_TYPE) or field.name.startswith("GGUF."):
            continue
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    for tensor in reader.tensors:
        dtype = np.float16 if len(tensor.shape) > 1 else np.float32
        writer.add_tensor(tensor.name, dequantize(tensor.data, tensor.tensor_type).astype(dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def model_file(type_name: str) -> Path:
    """Where the file of one type (or the F16 source) is cached."""
    return FILES / f"SmolLM2-135M-Instruct.{type_name}.gguf"


def quantize(source: str) -> None:
    """Each file of TYPES not made yet, by llama.cpp's quantizer with its default
    parameters as `llama-quantize SOURCE TARGET TYPE` runs it (in the bench venv)."""
    import ctypes

    import llama_cpp

    for type_name in TYPES:
        if model_file(type_name).exists():
            continue
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}")
        params.nthread = THREADS
        with written_whole(model_file(type_name)) as target:
            if llama_cpp.llama_model_quantize(source.encode(), str(target).encode(), ctypes.byref(params)) != 0:
                raise SystemExit(f"llama_model_quantize to {type_name} failed")


def make_files(bundled: Path) -> dict[str, Path]:
    """The file of each type in TYPES, made from ``bundled`` through F16 on the first run."""
    FILES.mkdir(parents=True, exist_ok=True)
    f16 = model_file("F16")
    if not f16.exists():
        with written_whole(f16) as target:
            write_f16(bundled, target)
    subprocess.run([str(PEER_PYTHON), __file__, "--quantize", str(f16)], check=True, timeout=3600)
    return {type_name: model_file(type_name) for type_name in TYPES}


def measure(engine: str, model: str) -> dict[str, list[float]]:
    """Decode tok/s and seconds to the first token of the long prompt, per repetition, in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stream = ENGINES[engine](model)
    timed(stream, SHORT, 8)  # warm-up
    decode, ttft = [], []
    for repetition in range(REPETITIONS):
        first, last, pieces, _ = timed(stream, SHORT, DECODE_TOKENS)
        decode.append((pieces - 1) / (last - first))
        ttft.append(timed(stream, long_prompt(repetition), 1)[0])
    return {"decode_tok_s": decode, "long_prompt_ttft_s": ttft}


def run_engine(engine: str, model: Path, prompt_tokens: int) -> dict[str, object]:
    """One engine on one file in its own process (without RUST_BACKTRACE, as
    engines.py runs them): median figures and the runs, or the error text."""
    python = sys.executable if engine == OURS else str(PEER_PYTHON)
    environment = {key: value for key, value in os.environ.items() if key != "RUST_BACKTRACE"}
    command = [python, __file__, "--engine", engine, "--model", str(model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=environment)
    if result.returncode != 0:
        return {"error": f"exit status {result.returncode}: {result.stderr[-2000:]}"}
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "decode_tok_s": statistics.median(runs["decode_tok_s"]),
        "prompt_tok_s": prompt_tokens / statistics.median(runs["long_prompt_ttft_s"]),
        "runs": runs,
    }


def measure_type(name: str, path: Path, prompt_tokens: int) -> dict[str, object]:
    """Both engines on one type's file, with the file's size and tensor types."""
    from gguf import GGUFReader

    engines = {engine: run_engine(engine, path, prompt_tokens) for engine in (OURS, LLAMACPP)}
    ours, reference = engines[OURS], engines[LLAMACPP]
    both = "error" not in ours and "error" not in reference
    return {
        "type": name,
        "file": str(path),
        "file_mib": path.stat().st_size / 2**20,
        "tensor_types": dict(Counter(tensor.tensor_type.name for tensor in GGUFReader(path).tensors)),
        "engines": engines,
        "mistralvllm_over_llamacpp": {key: ours[key] / reference[key] for key in ("decode_tok_s", "prompt_tok_s")} if both else None,
    }


def figures(row: dict[str, object]) -> str:
    """An engine's decode and prompt tok/s for the table, or the last line of its error."""
    if "error" in row:
        return f"{'failed: ' + str(row['error']).strip().splitlines()[-1][:60]:>27}"
    return f"{row['decode_tok_s']:>13.1f} {row['prompt_tok_s']:>13.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=(OURS, LLAMACPP), help="measure one engine here and print JSON (used by the driver)")
    parser.add_argument("--model")
    parser.add_argument("--quantize", metavar="F16_GGUF", help="make the files of TYPES from this one here (used by the driver)")
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(measure(args.engine, args.model)))
        return
    if args.quantize:
        quantize(args.quantize)
        return

    from mistralvllm import Session, default_model_path

    files = make_files(default_model_path())
    with Session(default_model_path()) as session:
        prompt_tokens = session.count_tokens(long_prompt(0))
    rows = [measure_type(name, path, prompt_tokens) for name, path in files.items()]
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu": platform.processor() or platform.machine(),
        "threads": THREADS,
        "model": "SmolLM2-135M-Instruct, dequantized to F16 and quantized by llama.cpp (llama_model_quantize)",
        "decode_tokens": DECODE_TOKENS,
        "long_prompt_tokens": prompt_tokens,
        "repetitions": REPETITIONS,
        "types": rows,
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-gguf-types.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':14} {'mistralvllm tok/s':>27} {'llama.cpp tok/s':>27} {'ours / llama.cpp':>17}")
    print(f"{'type':7} {'MiB':>6} {'decode':>13} {'prompt':>13} {'decode':>13} {'prompt':>13} {'decode':>8} {'prompt':>8}")
    for row in rows:
        ratios = row["mistralvllm_over_llamacpp"]
        ratio_text = f"{ratios['decode_tok_s']:>8.2f} {ratios['prompt_tok_s']:>8.2f}" if ratios else ""
        print(f"{row['type']:7} {row['file_mib']:>6.1f} {figures(row['engines'][OURS])} {figures(row['engines'][LLAMACPP])} {ratio_text}")
    print("tensor types (llama.cpp keeps some tensors in other types):")
    for row in rows:
        print(f"  {row['type']:7} " + ", ".join(f"{kind} {count}" for kind, count in sorted(row["tensor_types"].items())))
    print(f"{THREADS} threads, {prompt_tokens}-token prompt, {DECODE_TOKENS} new tokens, medians of {REPETITIONS}; written to {out}")


if __name__ == "__main__":
    main()
