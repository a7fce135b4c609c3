"""An image prompt against llama.cpp: a Gemma 3 vision model with random
weights (speed does not depend on the values) of real shapes, the vision
tower of Gemma 3 4B/12B/27B (SigLIP so400m/14 at 896x896 pixels, 27 layers,
256 soft tokens an image) with Gemma 3 270M's text model and SmolLM2's
tokenizer (its image tokens added), float32, served by both engines, each in
its own process, the same thread count:

- ours: ``mistralvllm serve`` on the Hugging Face directory
  (`vision_model.write_gemma3_vision`), dtype f32;
- llama.cpp: ``llama-server -m text.gguf --mmproj mmproj.gguf`` on the same
  weights as GGUFs (`vision_gguf.write_vision_ggufs`, all F32).

Both get the same prompt through ``/v1/chat/completions``: one image (an
``image_url`` data: URL part, a 896x896 PNG, a different one each request)
and a question, spaced so that both tokenize the same text around the image
(`vision_gguf.mtmd_user_content`); both count the prompt's tokens in
``usage.prompt_tokens``. Caches off on both (our prefix cache, llama-server's
``cache_prompt`` and its RAM prompt cache): each request encodes its image
and fills the prompt anew.

Per engine: a warm-up request, then REPETITIONS requests of one answer token
(the image prompt: image decoding, the vision tower, the prompt's prefill;
wall seconds, median) and one streamed request of DECODE_TOKENS tokens
(decode tok/s: the streamed chunks, a token each, after the first over the
seconds from the first to the last; end-of-text tokens barred), then the
server's peak RSS (VmHWM). Ratios: image prompt theirs over ours and decode
ours over theirs (above 1: we are faster), peak RSS ours over theirs.

The weights have the tiny model's scales (`vision_model.random_tensor`),
sane for two layers; over 18 both engines answer ``\n`` (the prompt's last
token) again and again, each with a log-prob of 0: the same tokens in both,
and the same work a token as any other answer.

    make bench-images

Results: benches/results/<date>-<host>-images.json, and the table in
docs/benchmarks.md. ``--tiny`` runs the same on the test suite's tiny model
(56x56 images, one repetition), writes its results to a temporary file and
leaves docs/benchmarks.md alone: a functional check. ``--check`` writes the
real-shape model where missing and sends one image request to each engine,
timed, measuring nothing else.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import machine
import report as report_tables
from engines import THREADS
from matrix import BENCH_BIN, free_port, served
from model_shapes import FILES
from vision_gguf import write_vision_ggufs
from vision_model import png_image, write_gemma3_vision

# Gemma 3 270M's text model (head_dim 256 with 4 heads of a 640 hidden size).
TEXT_SHAPE: dict[str, Any] = {
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "max_position_embeddings": 32768,
}
# The vision tower of Gemma 3 4B, 12B and 27B: SigLIP so400m/14 at 896 px,
# 64x64 patches pooled 4x4 into 256 soft tokens.
VISION_SHAPE: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 896,
    "patch_size": 14,
}
MM_TOKENS = 256
MODEL = "gemma3-270m-siglip896"
LIKE = "Gemma 3 4B-27B's vision tower (SigLIP so400m/14, 896 px) with Gemma 3 270M's text model"
TINY_MODEL = Path.home() / ".cache" / "mistralvllm" / "models" / "tiny-gemma3-vision-v1"
QUESTION = "What is in this picture? Describe it in one sentence."
REPETITIONS = 3
DECODE_TOKENS = 32
CONTEXT = 4096
RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- bench-images:start -->", "<!-- bench-images:end -->"


def tokenizer_dir() -> Path:
    """SmolLM2's tokenizer as a Hugging Face directory (the default model's, made once)."""
    from mistralvllm import default_model_path
    from mistralvllm.convert import gguf_to_plain

    target = FILES / "smollm2-135m-plain"
    if not (target / "tokenizer.json").is_file():
        gguf_to_plain(default_model_path(), target)
    return target


def vision_dir() -> Path:
    """The real-shape model's Hugging Face directory, float32, made once."""
    from mistralvllm.convert import staged_dir

    target = FILES / MODEL
    if not (target / "config.json").is_file():
        with staged_dir(target) as staging:
            write_gemma3_vision(tokenizer_dir(), staging, text_config=TEXT_SHAPE, vision_config=VISION_SHAPE, mm_tokens_per_image=MM_TOKENS)
    return target


def ggufs(model_dir: Path, out: Path) -> tuple[Path, Path]:
    """``model_dir``'s text and mmproj GGUFs in ``out``, made once (each file is renamed into place whole)."""
    text, mmproj = out / "text.gguf", out / "mmproj.gguf"
    if text.is_file() and mmproj.is_file():
        return text, mmproj
    return write_vision_ggufs(model_dir, out)


def image(size: int, variant: int) -> bytes:
    """A size x size PNG: red and green gradients across and down, a blue 8x8
    checkerboard whose shade ``variant`` shifts (each request its own image)."""
    cell = max(1, size // 8)

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        return 255 * x // (size - 1), 255 * y // (size - 1), (128 * ((x // cell + y // cell) % 2) + 37 * variant) % 256

    return png_image(size, size, pixel)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid}: no VmHWM")


def end_of_text_ids(model_dir: Path) -> list[int]:
    """The ids that end an answer (generation_config's eos_token_id and the
    tokenizer's eos_token), which our requests bias away as llama-server's
    ``ignore_eos`` does: random weights must not end the decode early."""
    ids: set[int] = set()
    generation = model_dir / "generation_config.json"
    if generation.is_file():
        eos = json.loads(generation.read_text()).get("eos_token_id")
        ids.update([eos] if isinstance(eos, int) else eos or [])
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    eos_token = config.get("eos_token")
    eos_token = eos_token.get("content") if isinstance(eos_token, dict) else eos_token
    for key, token in config.get("added_tokens_decoder", {}).items():
        if token["content"] == eos_token:
            ids.add(int(key))
    return sorted(ids)


@contextmanager
def server(engine: str, model_dir: Path, text_gguf: Path, mmproj: Path) -> Iterator[tuple[str, str, int]]:
    """``engine``'s server on the model: its base URL, model name and process id."""
    import httpx

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if engine == "llama-server":
        command = [str(BENCH_BIN / "llama-server"), "-m", str(text_gguf), "--mmproj", str(mmproj), "-t", str(THREADS)]
        command += ["-c", str(CONTEXT), "-np", "1", "--cache-ram", "0", "--jinja", "--port", str(port), "--no-webui"]
        environment = None
    else:
        # The service reads MISTRALVLLM_* as config settings: the bench's own variable is not one.
        environment = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "MISTRALVLLM_BENCH_VENV")}
        environment["MISTRALVLLM_HISTORY__ENABLED"] = "false"
        environment["MISTRALVLLM_MODEL__DTYPE"] = "f32"
        environment["MISTRALVLLM_ENGINE__PREFIX_CACHE"] = "0"
        environment["MISTRALVLLM_SERVER__REQUEST_TIMEOUT"] = "3600"  # the default 300 s ends a slow image prompt
        command = [sys.executable, "-m", "mistralvllm", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = served(command, base_url, log, env=environment)
        print(f"{engine}: loaded in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            yield base_url, httpx.get(f"{base_url}/v1/models", timeout=5).json()["data"][0]["id"], process.pid
        finally:
            process.terminate()
            process.wait(timeout=60)


def request_body(engine: str, model: str, png: bytes, max_tokens: int, eos_ids: list[int]) -> dict[str, Any]:
    """A greedy chat request of one image and QUESTION, each engine's way to
    the same tokens: mistral.rs's Gemma 3 processor writes ``\\n\\n`` before
    and after the image's tokens itself; llama-server joins the parts around
    its media marker as they are (`vision_gguf.mtmd_user_content`)."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    image_part = {"type": "image_url", "image_url": {"url": url}}
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if engine == "llama-server":
        content = [{"type": "text", "text": "\n\n"}, image_part, {"type": "text", "text": "\n\n" + QUESTION}]
        body |= {"cache_prompt": False, "ignore_eos": True}
    else:
        content = [image_part, {"type": "text", "text": QUESTION}]
        body["logit_bias"] = {str(token): -100 for token in eos_ids}
    body["messages"] = [{"role": "user", "content": content}]
    return body


def image_prompt(base_url: str, body: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    """One request of one answer token: its wall seconds, prompt tokens and reply."""
    import httpx

    started = time.perf_counter()
    answer = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=3600)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    reply = answer.json()
    return elapsed, int(reply["usage"]["prompt_tokens"]), reply


def streamed_decode(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed request: seconds to the first chunk of text, decode tok/s
    (the chunks after the first over the seconds from the first to the last:
    both servers send a token a chunk; ours sends none for a first token of
    white space, which a count of completion tokens would add), the tokens
    and the text."""
    import httpx

    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    chunks, usage, text, timings = 0, None, [], None
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=3600) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            usage = event.get("usage") or usage
            timings = event.get("timings") or timings
            for choice in event.get("choices", []):
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = now if first is None else first
                    last = now
                    chunks += 1
                    text.append(choice["delta"]["content"])
    if first is None or last is None or usage is None:
        raise RuntimeError(f"{base_url}: a streamed answer without text or usage")
    return {
        "first_chunk_s": first - started,
        "decode_tok_s": (chunks - 1) / (last - first) if chunks > 1 and last > first else None,
        "completion_tokens": int(usage["completion_tokens"]),
        "content_chunks": chunks,
        "text": "".join(text),
        "server_timings": timings,
    }


def measure(engine: str, model_dir: Path, text_gguf: Path, mmproj: Path, size: int, repetitions: int) -> dict[str, Any]:
    eos_ids = end_of_text_ids(model_dir)
    with server(engine, model_dir, text_gguf, mmproj) as (base_url, name, pid):
        image_prompt(base_url, request_body(engine, name, image(size, 0), 1, eos_ids))  # warm-up
        runs = [image_prompt(base_url, request_body(engine, name, image(size, 1 + i), 1, eos_ids)) for i in range(repetitions)]
        decode = streamed_decode(base_url, request_body(engine, name, image(size, 1 + repetitions), DECODE_TOKENS, eos_ids))
        found = {
            "image_prompt_s": statistics.median(run[0] for run in runs),
            "image_prompt_s_runs": [run[0] for run in runs],
            "prompt_tokens": runs[0][1],
            "answer": runs[0][2]["choices"][0]["message"].get("content"),
            **decode,
            "peak_rss_mib": peak_rss_mib(pid),
        }
    print(f"{engine}: {json.dumps({k: v for k, v in found.items() if k not in ('text', 'server_timings')})}", flush=True)
    return found


def check(engine: str, model_dir: Path, text_gguf: Path, mmproj: Path, size: int) -> None:
    """One image request of one answer token, timed: the model loads and reads an image."""
    with server(engine, model_dir, text_gguf, mmproj) as (base_url, name, pid):
        seconds, prompt_tokens, reply = image_prompt(base_url, request_body(engine, name, image(size, 0), 1, end_of_text_ids(model_dir)))
        answer = reply["choices"][0]["message"].get("content")
        print(f"{engine}: one image request {seconds:.1f} s, {prompt_tokens} prompt tokens, answer {answer!r}, peak RSS {peak_rss_mib(pid):.0f} MiB")


def table(report: dict[str, Any], results: Path, page: Path) -> str:
    """The image-prompt table: ours against llama-server."""
    ours, theirs, found = report["mistralvllm"], report["llama-server"], report["ratios"]
    lines = [
        f"Measured {report['date']} on `{report['host']}` ({report['threads']} threads), {report_tables.link(results, page)}: "
        f"{report['like']} (random weights, float32), one {report['image_size']}x{report['image_size']} image and a question "
        f"({ours['prompt_tokens']} prompt tokens ours, {theirs['prompt_tokens']} theirs, {report['mm_tokens_per_image']} of them the "
        "image's), `mistralvllm serve` on the safetensors against `llama-server --mmproj` on the GGUFs of the same weights, caches off. "
        f"Image prompt: wall seconds of a request of one answer token, median of {report['repetitions']}, theirs over ours; "
        f"decode: tok/s of {report['decode_tokens']} tokens after the image, ours over theirs; peak RSS (VmHWM): ours over theirs.",
        "",
        "| image prompt | s (ours / theirs) | decode | tok/s (ours / theirs) | peak RSS | MiB (ours / theirs) |",
        "|---|---|---|---|---|---|",
        f"| {found['image_prompt']:.2f}× | {ours['image_prompt_s']:.2f} / {theirs['image_prompt_s']:.2f} "
        f"| {found['decode']:.2f}× | {ours['decode_tok_s']:.1f} / {theirs['decode_tok_s']:.1f} "
        f"| {found['peak_rss']:.2f}× | {ours['peak_rss_mib']:.0f} / {theirs['peak_rss_mib']:.0f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tiny", action="store_true", help="the test suite's tiny model, one repetition; results to a temporary file, docs untouched")
    mode.add_argument(
        "--check", action="store_true", help="one timed image request per engine on the real-shape model, nothing written but the model"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-images-") as scratch:
        if arguments.tiny:
            if not (TINY_MODEL / "config.json").is_file():
                raise SystemExit(f"{TINY_MODEL}: no tiny vision model (the test suite writes it: pytest tests/test_images.py)")
            model_dir, gguf_dir, repetitions = TINY_MODEL, Path(scratch), 1
        else:
            model_dir, gguf_dir, repetitions = vision_dir(), FILES / f"{MODEL}-gguf", REPETITIONS
        text_gguf, mmproj = ggufs(model_dir, gguf_dir)
        config = json.loads((model_dir / "config.json").read_text())
        size = int(config["vision_config"]["image_size"])
        if arguments.check:
            for engine in ("llama-server", "mistralvllm"):
                check(engine, model_dir, text_gguf, mmproj, size)
            return
        theirs = measure("llama-server", model_dir, text_gguf, mmproj, size, repetitions)
        ours = measure("mistralvllm", model_dir, text_gguf, mmproj, size, repetitions)
        report = {
            **machine.described(THREADS),
            "model": model_dir.name,
            "like": "the tiny test model" if arguments.tiny else LIKE,
            "text_config": config["text_config"],
            "vision_config": config["vision_config"],
            "mm_tokens_per_image": config["mm_tokens_per_image"],
            "image_size": size,
            "repetitions": repetitions,
            "decode_tokens": DECODE_TOKENS,
            "question": QUESTION,
            "llama-server": theirs,
            "mistralvllm": ours,
            "ratios": {
                "image_prompt": theirs["image_prompt_s"] / ours["image_prompt_s"],
                "decode": ours["decode_tok_s"] / theirs["decode_tok_s"] if ours["decode_tok_s"] and theirs["decode_tok_s"] else None,
                "peak_rss": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
            },
        }
        print(json.dumps(report["ratios"]), flush=True)
        if abs(ours["prompt_tokens"] - theirs["prompt_tokens"]) > 2:
            print(f"warning: prompt tokens differ: ours {ours['prompt_tokens']}, theirs {theirs['prompt_tokens']}", flush=True)
        # The tiny model's run is a functional check: its results stay out of the repository and the docs.
        folder, suffix = (Path(tempfile.gettempdir()), "-tiny") if arguments.tiny else (RESULTS, "")
        results = folder / f"{report['date']}-{report['host']}-images{suffix}.json"
        results.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {results}")
        if not arguments.tiny:
            report_tables.write_between(report_tables.BENCHMARKS, START, END, table(report, results, report_tables.BENCHMARKS))
        print(table(report, results, report_tables.BENCHMARKS))


if __name__ == "__main__":
    main()
