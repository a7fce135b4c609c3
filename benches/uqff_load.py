"""UQFF against quantizing at load: the plain SmolLM2-135M copy with the
seed's per-layer topology, loaded by quantizing in situ (every time) or from
the UQFF directory written once. Each load runs in a fresh process; the
files are in the page cache for all of them. Medians of 3.

Run with `make bench-uqff`; writes benches/results/<date>-<host>-uqff.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import machine

from mistralvllm import default_model_path
from mistralvllm.convert import gguf_to_plain

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = REPO / "config" / "seed-topology.yml"
PLAIN = Path(os.environ.get("MISTRALVLLM_CACHE", Path.home() / ".cache" / "mistralvllm")) / "models" / "smollm2-135m-instruct-f32-v1"
REPETITIONS = 3
# One load in a fresh interpreter: prints the load time and a greedy answer as JSON.
LOAD = """
import json, sys, time
from mistralvllm import SamplingParams, Session, Topology
model, topology, write = sys.argv[1], sys.argv[2] or None, sys.argv[3] or None
started = time.monotonic()
session = Session(model, device="cpu", topology=topology and Topology.from_file(topology), write_uqff=write)
seconds = time.monotonic() - started
text = session.chat([{"role": "user", "content": "Name three colours."}], SamplingParams(max_tokens=24)).text
print(json.dumps({"load_s": seconds, "text": text}))
"""


def load(model: Path, topology: Path | None = None, write: Path | None = None) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(model), str(topology or ""), str(write or "")], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_load(model: Path, topology: Path | None = None) -> tuple[float, str]:
    runs = [load(model, topology) for _ in range(REPETITIONS)]
    return statistics.median(float(r["load_s"]) for r in runs), str(runs[0]["text"])


def main() -> None:
    if not (PLAIN / "config.json").is_file():
        gguf_to_plain(default_model_path(), PLAIN)
    with tempfile.TemporaryDirectory() as scratch:
        uqff_dir = Path(scratch) / "uqff"
        write_s = statistics.median(float(load(PLAIN, TOPOLOGY, uqff_dir / "model.uqff")["load_s"]) for _ in range(REPETITIONS))
        uqff_bytes = sum(f.stat().st_size for f in uqff_dir.iterdir())
        quantize_s, quantized_text = median_load(PLAIN, TOPOLOGY)
        uqff_s, uqff_text = median_load(uqff_dir)
        plain_s, _ = median_load(PLAIN)
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu_count": os.cpu_count(),
        "model": "SmolLM2-135M-Instruct, f32 safetensors (dequantized from the bundled GGUF)",
        "topology": TOPOLOGY.read_text(),
        "repetitions": REPETITIONS,
        "load_s": {"quantize_at_load": quantize_s, "quantize_and_write_uqff": write_s, "from_uqff": uqff_s, "plain_f32_no_isq": plain_s},
        "uqff_over_quantize": uqff_s / quantize_s,
        "uqff_dir_bytes": uqff_bytes,
        "plain_bytes": sum(f.stat().st_size for f in PLAIN.glob("*.safetensors")),
        "same_greedy_text": uqff_text == quantized_text,
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-uqff.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, seconds in report["load_s"].items():
        print(f"{name:26} {seconds:6.2f} s")
    print(f"from UQFF / quantize at load: {report['uqff_over_quantize']:.2f}; same greedy text: {report['same_greedy_text']}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
