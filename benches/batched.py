"""Many chats decoded together: our engine against llama.cpp's own batching.

`make bench` measures llama-cpp-python through its chat API, which serves
one request at a time, so its 8-chat figure is serialized. llama.cpp itself
decodes several sequences in one step (its server does): this bench drives
that through llama-cpp-python's C API, so the 8-chats-over-1 ratio that
continuous batching gives us can be set beside what llama.cpp's batching
gives on the same machine, model and threads.

For each engine and each number of chats (1 and 8): the chats' prompts
("Write a short poem about <topic>." in the model's chat template), then
CONCURRENT_TOKENS greedy tokens each; aggregate tok/s = all new tokens over the
wall time from the first request to the last token, prefill included.
- ours: one thread per chat, each streaming from one Session, as a server
  would (detokenizing and streaming included);
- llama.cpp: all prompts in one llama_decode, then one llama_decode per step
  with one token of every chat (argmax on the logits, no detokenizing).
This VM's speed drifts within minutes, so the engines take turns: ROUNDS
rounds of one process each, the order swapped every round; each engine's
ratio is the median of its rounds' ratios.

    make bench-batched

Results go to benches/results/<date>-<host>-batched.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import engines
import machine
from engines import CONCURRENT_TOKENS, PEER_PYTHON, THREADS, concurrent, default_model, poem_question

REPO = Path(__file__).resolve().parent.parent
CHATS = (1, 8)
REPETITIONS = 3
ROUNDS = 4


def load_ours(model: str) -> Callable[[int], float]:
    """Aggregate tok/s of a number of concurrent streams from one Session
    (`make bench`'s concurrent chats, not serialized)."""
    stream = engines.load_ours(model)
    return lambda chats: concurrent(stream, chats, serialized=False)["aggregate_tok_s"]


def load_llamacpp(model: str) -> Callable[[int], float]:
    """Aggregate tok/s of a number of sequences decoded together by llama.cpp."""
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as c
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(model, n_ctx=512, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    # The prompts as llama-cpp-python's chat API writes them: the GGUF's template.
    template = Jinja2ChatFormatter(
        llm.metadata["tokenizer.chat_template"],
        eos_token=llm.detokenize([llm.token_eos()]).decode(),
        bos_token=llm.detokenize([llm.token_bos()]).decode(),
    )
    params = llm.context_params
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 512 * max(CHATS), 512, 512, max(CHATS)
    n_vocab = llm.n_vocab()

    def aggregate(chats: int) -> float:
        context = c.llama_init_from_model(llm._model.model, params)
        batch = c.llama_batch_init(512, 0, 1)

        def decode(entries: list[tuple[int, int, int, bool]]) -> None:
            """One llama_decode of (token, position, sequence, wants logits) entries."""
            batch.n_tokens = len(entries)
            for i, (token, position, sequence, logits) in enumerate(entries):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, logits
                batch.seq_id[i][0] = sequence
            if c.llama_decode(context, batch) != 0:
                raise RuntimeError("llama_decode failed")

        def argmax(index: int) -> int:
            return int(np.ctypeslib.as_array(c.llama_get_logits_ith(context, index), shape=(n_vocab,)).argmax())

        try:
            started = time.perf_counter()
            prompts = [
                llm.tokenize(template(messages=[{"role": "user", "content": poem_question(index)}]).prompt.encode(), add_bos=False, special=True)
                for index in range(chats)
            ]
            entries = [(t, p, s, p == len(prompt) - 1) for s, prompt in enumerate(prompts) for p, t in enumerate(prompt)]
            decode(entries)
            tokens = [argmax(i) for i, entry in enumerate(entries) if entry[3]]
            positions = [len(prompt) for prompt in prompts]
            for _ in range(CONCURRENT_TOKENS - 1):
                decode([(tokens[s], positions[s], s, True) for s in range(chats)])
                tokens = [argmax(s) for s in range(chats)]
                positions = [p + 1 for p in positions]
            return chats * CONCURRENT_TOKENS / (time.perf_counter() - started)
        finally:
            c.llama_batch_free(batch)
            c.llama_free(context)

    return aggregate


ENGINES = {"mistralvllm": load_ours, "llama.cpp": load_llamacpp}
PYTHONS = {"mistralvllm": sys.executable, "llama.cpp": str(PEER_PYTHON)}


def measure(name: str, model: str) -> dict[str, list[float]]:
    """Each number of chats REPETITIONS times in this process, after a warm-up."""
    aggregate = ENGINES[name](model)
    aggregate(1)
    return {str(chats): [aggregate(chats) for _ in range(REPETITIONS)] for chats in CHATS}


def run(name: str, model: str) -> dict[str, list[float]]:
    command = [PYTHONS[name], __file__, "--measure", name, model]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        raise SystemExit(f"{name}: failed\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measure", nargs=2, metavar=("ENGINE", "MODEL"), help="measure one engine in this process, print JSON")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON}: no bench venv; run `make bench-batched`")
    model = default_model()
    rounds = []
    for number in range(ROUNDS):
        order = list(ENGINES) if number % 2 == 0 else list(reversed(ENGINES))
        rounds.append({name: run(name, model) for name in order})
    engines = {}
    for name in ENGINES:
        medians = [{chats: statistics.median(r[name][str(chats)]) for chats in CHATS} for r in rounds]
        engines[name] = {
            "aggregate_tok_s": {str(chats): statistics.median(m[chats] for m in medians) for chats in CHATS},
            "eight_over_one": statistics.median(m[8] / m[1] for m in medians),
            "rounds": medians,
        }
    report = {
        "date": date.today().isoformat(),
        "host": machine.host(),
        "cpu_flags": machine.cpu_flags(),
        "threads": THREADS,
        "model": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
        "chat_tokens": CONCURRENT_TOKENS,
        "repetitions": REPETITIONS,
        "engines": engines,
    }
    out = REPO / "benches" / "results" / f"{report['date']}-{report['host']}-batched.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in engines.items():
        figures = ", ".join(f"{chats} chats {row['aggregate_tok_s'][str(chats)]:.1f} tok/s" for chats in CHATS)
        print(f"{name}: {figures}; 8 over 1 {row['eight_over_one']:.2f}x (median of {ROUNDS} rounds)")
    print(out)


if __name__ == "__main__":
    main()
