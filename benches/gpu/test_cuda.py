"""The CUDA checks, run on a GPU machine by benches/gpu/run.sh (pytest need
not be installed there): paged attention with block sizes 16 and 32 and KV
memory given in all three of seed 003's forms, an F8E4M3 KV cache, paged attention off, the
seed's four-range topology with ISQ on the GPU, and 32 concurrent chats that
must each give the answer they give alone.

    python benches/gpu/test_cuda.py MODEL_DIR --out OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import torch

from mistralvllm import BUILD_FEATURES, SamplingParams, Session, Topology

PROMPTS = [f"Tell me about the number {i}." for i in range(32)]
TOKENS = 24


def greedy(session: Session, prompt: str, tokens: int = TOKENS) -> str:
    result = session.chat([{"role": "user", "content": prompt}], SamplingParams(max_tokens=tokens, temperature=0.0))
    assert result.usage.completion_tokens == tokens or result.finish_reason == "stop", result
    return result.text


def check_paged(model: str, block_size: int, kv_mem: object) -> dict:
    with Session(model, device="cuda", paged_attention="on", block_size=block_size, kv_mem=kv_mem) as session:
        info = session.info()
        assert info["paged_attention"] is True and info["block_size"] == block_size, info
        return {"info": {k: info[k] for k in ("paged_attention", "block_size", "kv_mem", "device")}, "text": greedy(session, PROMPTS[0])}


def check_fp8_kv_cache(model: str) -> dict:
    """Paged attention with an F8E4M3 KV cache: it loads, answers, and how far
    its greedy text stays with the model-dtype cache's."""
    with Session(model, device="cuda", paged_attention="on", kv_mem="4096MB") as session:
        reference = greedy(session, PROMPTS[0])
    with Session(model, device="cuda", paged_attention="on", kv_mem="4096MB", paged_cache_type="f8e4m3") as session:
        assert session.info()["paged_cache_type"] == "f8e4m3"
        text = greedy(session, PROMPTS[0])
    same = next((i for i, (a, b) in enumerate(zip(reference.split(), text.split(), strict=False)) if a != b), None)
    return {"text": text, "reference": reference, "first_differing_word": same}


def check_unpaged(model: str) -> dict:
    with Session(model, device="cuda", paged_attention="off") as session:
        assert session.info()["paged_attention"] is False
        return {"text": greedy(session, PROMPTS[0])}


def check_seed_topology(model: str, layers: int) -> dict:
    quarter = layers // 4
    topology = Topology()
    for index, isq in enumerate(("Q3K", "Q4K", "Q6K", "Q8_0")):
        end = layers if index == 3 else (index + 1) * quarter
        topology = topology.with_range(index * quarter, end, isq=isq, device="cuda:0")
    started = time.perf_counter()
    with Session(model, device="cuda", topology=topology) as session:
        load_s = time.perf_counter() - started
        return {"load_s": load_s, "topology": session.info()["topology"], "text": greedy(session, PROMPTS[0])}


def check_concurrent(model: str) -> dict:
    with Session(model, device="cuda", paged_attention="on", max_num_seqs=32) as session:
        alone = [greedy(session, prompt) for prompt in PROMPTS]
        with ThreadPoolExecutor(32) as pool:
            together = list(pool.map(lambda prompt: greedy(session, prompt), PROMPTS))
        # Batched GEMMs may round differently from single ones, so a late token
        # can differ; answers leaking into each other differ from the start.
        first_words = sum(a.split()[:4] == b.split()[:4] for a, b in zip(alone, together, strict=True))
        identical = sum(a == b for a, b in zip(alone, together, strict=True))
        assert first_words == len(PROMPTS), list(zip(alone, together, strict=True))
        assert session.sequence_counts() == {"running": 0, "waiting": 0}
        return {
            "identical": identical,
            "same_start": first_words,
            "of": len(PROMPTS),
            "max_running_sequences": session.info()["max_running_sequences"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--out", type=Path, default=Path("benches/results"))
    args = parser.parse_args()
    layers = json.loads((Path(args.model) / "config.json").read_text())["num_hidden_layers"]
    checks = {
        "paged, block 16, kv_mem 4096MB": lambda: check_paged(args.model, 16, "4096MB"),
        "paged, block 32, kv_mem 0.5 of GPU memory": lambda: check_paged(args.model, 32, 0.5),
        "paged, block 32, kv_mem 8192 tokens": lambda: check_paged(args.model, 32, "8192 tokens"),
        "paged, F8E4M3 KV cache": lambda: check_fp8_kv_cache(args.model),
        "paged off": lambda: check_unpaged(args.model),
        "seed topology, ISQ on GPU": lambda: check_seed_topology(args.model, layers),
        "32 concurrent chats": lambda: check_concurrent(args.model),
    }
    results, failed = {}, 0
    for name, check in checks.items():
        try:
            results[name] = {"ok": True, **check()}
        except Exception:
            failed += 1
            results[name] = {"ok": False, "error": traceback.format_exc()[-2000:]}
        print(("PASS " if results[name]["ok"] else "FAIL ") + name, flush=True)
    gpu = torch.cuda.get_device_name(0)
    report = {"date": date.today().isoformat(), "gpu": gpu, "build_features": BUILD_FEATURES, "checks": results}
    out = args.out / f"{report['date']}-{gpu.replace(' ', '-')}-cuda-tests.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(checks) - failed} passed, {failed} failed; written to {out}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
