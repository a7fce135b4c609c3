"""The GPU benchmark, run by benches/gpu/run.sh: decode tok/s at batch 1
against the HBM roofline (bytes per token = the weights read once), aggregate
tok/s at 1/8/32/64 concurrent chats with paged attention on and off, time to
first token for a ~512-token prompt, and Hugging Face transformers `generate`
on the same weights as the reference point.

    python benches/gpu/bench_cuda.py MODEL_DIR --out OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import torch

from mistralvllm import SamplingParams, Session

DECODE_TOKENS = 128
CONCURRENCY = (1, 8, 32, 64)
SHORT = "Write a story about a lighthouse keeper."
LONG = "Summarize: " + "The lighthouse stood on the cliff and its light swept the sea every night. " * 32


def hbm_bandwidth_gib_s() -> float:
    """Device-to-device copy of 1 GiB, best of 10: bytes read plus written per second."""
    source = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(10):
        torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() / best / 2**30


def decode_rate(session: Session, tokens: int = DECODE_TOKENS) -> float:
    first = last = None
    pieces = 0
    for chunk in session.stream([{"role": "user", "content": SHORT}], SamplingParams(max_tokens=tokens, temperature=0.0)):
        if chunk.text:
            now = time.perf_counter()
            first = first or now
            last, pieces = now, pieces + 1
    return (pieces - 1) / (last - first)


def ttft(session: Session) -> float:
    started = time.perf_counter()
    for chunk in session.stream([{"role": "user", "content": LONG}], SamplingParams(max_tokens=1, temperature=0.0)):
        if chunk.text or chunk.finish_reason:
            return time.perf_counter() - started
    raise AssertionError("no answer")


def aggregate(session: Session, clients: int) -> dict[str, float]:
    def one(index: int) -> tuple[int, float]:
        started = time.perf_counter()
        result = session.chat([{"role": "user", "content": f"{SHORT} Number {index}."}], SamplingParams(max_tokens=DECODE_TOKENS, temperature=0.0))
        return result.usage.completion_tokens, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "aggregate_tok_s": sum(t for t, _ in results) / wall,
        "latency_median_s": statistics.median(latency for _, latency in results),
    }


def measure(model: str, **options: object) -> dict[str, object]:
    started = time.perf_counter()
    with Session(model, device="cuda", max_num_seqs=64, **options) as session:
        load_s = time.perf_counter() - started
        decode_rate(session, 8)  # warm-up
        return {
            "options": {k: str(v) for k, v in options.items()},
            "load_s": load_s,
            "decode_tok_s": statistics.median(decode_rate(session) for _ in range(3)),
            "long_prompt_ttft_s": statistics.median(ttft(session) for _ in range(3)),
            "concurrency": [aggregate(session, clients) for clients in CONCURRENCY],
        }


def transformers_reference(model: str) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.bfloat16, device_map="cuda")
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": SHORT}], add_generation_prompt=True, return_tensors="pt").to("cuda")
    hf.generate(inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    rates = []
    for _ in range(3):
        torch.cuda.synchronize()
        started = time.perf_counter()
        hf.generate(inputs, max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS, do_sample=False)
        torch.cuda.synchronize()
        rates.append(DECODE_TOKENS / (time.perf_counter() - started))
    del hf
    torch.cuda.empty_cache()
    return {"decode_tok_s": statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--out", type=Path, default=Path("benches/results"))
    args = parser.parse_args()
    weight_bytes = sum(p.stat().st_size for p in Path(args.model).glob("*.safetensors"))
    bandwidth = hbm_bandwidth_gib_s()
    roofline = bandwidth * 2**30 / weight_bytes
    runs = {
        "bf16, paged": measure(args.model, paged_attention="on"),
        "bf16, not paged": measure(args.model, paged_attention="off"),
        "Q4K ISQ, paged": measure(args.model, paged_attention="on", isq="Q4K"),
    }
    for name in ("bf16, paged", "bf16, not paged"):
        runs[name]["decode_fraction_of_roofline"] = runs[name]["decode_tok_s"] / roofline
    gpu = torch.cuda.get_device_name(0)
    report = {
        "date": date.today().isoformat(),
        "gpu": gpu,
        "model": f"Mistral-7B-shaped random Llama ({args.model})",
        "hbm_copy_bandwidth_gib_s": bandwidth,
        "bf16_weight_bytes": weight_bytes,
        "bf16_roofline_decode_tok_s": roofline,
        "runs": runs,
        "transformers_generate": transformers_reference(args.model),
    }
    out = args.out / f"{report['date']}-{gpu.replace(' ', '-')}-gpu.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
