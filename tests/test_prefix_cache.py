"""Prefix caching (a repeated long system prompt is reused, within a count
and a memory limit), the engine's counters and cache usage in info/metrics,
scoring text, and the KV-cache type setting."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mistralvllm import ConfigError, RequestError, SamplingParams, Session
from mistralvllm.config import load_config
from service import AUTH, metric


def counters(session: Session) -> dict[str, int | None]:
    """The engine's counters: sequences begun and prefix-cache hits."""
    stats = session.engine_stats()
    return {"sequences": stats["sequences"], "prefix_cache_hits": stats["prefix_cache_hits"]}


def settled_stats(session: Session) -> dict[str, int | None]:
    """The engine's stats once it has published the step that finished the
    last request: it publishes at every step, and an answer's last chunk can
    reach us before the step after it."""
    deadline = time.monotonic() + 30
    stats = session.engine_stats()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = session.engine_stats()
        if again == stats and not again["kv_cache_tokens"]:
            return again
        stats = again
    raise AssertionError(f"the engine's stats did not settle: {stats}")


def bytes_per_token(session: Session) -> int:
    """KV bytes one token holds: keys and values of every layer (SmolLM2-135M:
    30 layers, 3 KV heads of 64), in f16 on the CPU whatever the activations'
    dtype (patches/mistralrs-core-0.8.1/0012-kv-cache-memory-on-cpu: f32 held 4 bytes an element)."""
    assert session.info()["device"] == "cpu"
    return 30 * 2 * 3 * 64 * 2


SYSTEM = " ".join(
    f"Rule {n}: answer politely, briefly and truthfully, and say so when you do not know something about topic number {n}." for n in range(1, 25)
)


def test_repeated_system_prompt_hits_the_prefix_cache(default_model: Path) -> None:
    with Session(default_model, prefix_cache=4) as session:
        assert session.info()["prefix_cache_n"] == 4
        assert counters(session) == {"sequences": 0, "prefix_cache_hits": 0}
        first = session.chat(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=8)
        )
        second = session.chat(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of Spain?"}], SamplingParams(max_tokens=8)
        )
        stats = counters(session)
        info = session.info()
    assert info["prefix_cache_hits"] == 1 and info["sequences"] == 2
    assert first.usage.prompt_tokens > 400 and stats == {"sequences": 2, "prefix_cache_hits": 1}
    # Reported, not asserted (timings): the engine's prompt time with and without the hit.
    print(
        f"\nprompt of {first.usage.prompt_tokens} tokens: {first.usage.prompt_time_s:.3f} s cold, "
        f"{second.usage.prompt_time_s:.3f} s from the prefix cache"
    )


def test_an_identical_prompt_hits_the_prefix_cache(default_model: Path) -> None:
    """The same prompt asked again reuses all of it but its last token
    (patches/mistralrs-core-0.8.1/0002-prefix-cache-eviction-memory-identical-prompts); the engine gave up on it before."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}]
    with Session(default_model, prefix_cache=4) as session:
        first = session.chat(messages, SamplingParams(max_tokens=8))
        second = session.chat(messages, SamplingParams(max_tokens=8))
        assert counters(session) == {"sequences": 2, "prefix_cache_hits": 1}
    assert second.text == first.text
    print(f"\nthe same {first.usage.prompt_tokens}-token prompt: {first.usage.prompt_time_s:.3f} s, then {second.usage.prompt_time_s:.3f} s")


def test_a_prompt_from_the_cache_answers_as_one_read_in_full(default_model: Path) -> None:
    """A prompt whose last token is read on top of the cache gets the same
    attention as when it is read in full (patches/mistralrs-core-0.8.1/0001-cpu-attention-kernel):
    the greedy answers of this prompt parted at the ninth word when decoding
    had a kernel of its own."""
    messages = [{"role": "system", "content": "Your name is Zorblax."}, {"role": "user", "content": "What is your name?"}]
    with Session(default_model, prefix_cache=0) as session:
        read_in_full = session.chat(messages, SamplingParams(max_tokens=30)).text
    with Session(default_model, prefix_cache=4) as session:
        first = session.chat(messages, SamplingParams(max_tokens=30)).text
        from_the_cache = session.chat(messages, SamplingParams(max_tokens=30)).text
        assert counters(session)["prefix_cache_hits"] == 1
    assert first == read_in_full
    assert from_the_cache == read_in_full


def test_a_seeded_answer_is_the_same_with_its_prompt_from_the_cache(default_model: Path) -> None:
    """The first token after a prompt from the prefix cache was sampled with
    only the prompt's uncached part as its context: the seeded draw (keyed by
    the position) and the penalties saw a shorter text, and the answer parted
    from the one read in full at its first token (patches/mistralrs-core-0.8.1/0009-sampling-log-probabilities-logit-bias-context)."""
    messages = [{"role": "user", "content": "Name three colours."}]
    with Session(default_model, prefix_cache=4) as session:
        first, again = (session.chat(messages, SamplingParams(max_tokens=12, temperature=1.0, seed=5, frequency_penalty=0.5)) for _ in range(2))
    assert first.usage.cached_prompt_tokens == 0 and again.usage.cached_prompt_tokens > 0
    assert again.text == first.text


def test_usage_counts_the_cached_prompt_tokens(default_model: Path) -> None:
    """Usage names the prompt tokens the prefix cache supplied, for chats and
    text completions (patches/mistralrs-core-0.8.1/0010-streaming-and-usage)."""
    system = {"role": "system", "content": SYSTEM}
    with Session(default_model, prefix_cache=4) as session:
        first = session.chat([system, {"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=4)).usage
        second = session.chat([system, {"role": "user", "content": "What is the capital of Spain?"}], SamplingParams(max_tokens=4)).usage
        text = session.complete(SYSTEM, SamplingParams(max_tokens=4)).usage
        text_again = session.complete(SYSTEM, SamplingParams(max_tokens=4)).usage
    assert first.cached_prompt_tokens == 0 and text.cached_prompt_tokens == 0
    # The system prompt is most of the second chat; its question is not cached.
    assert first.prompt_tokens // 2 < second.cached_prompt_tokens < second.prompt_tokens
    # A repeated completion reuses all of its prompt but the last token.
    assert text.prompt_tokens == text_again.prompt_tokens > 400
    assert text_again.cached_prompt_tokens == text_again.prompt_tokens - 1
    assert text.completion_tokens == text_again.completion_tokens == 4


@pytest.mark.parametrize(("kept", "hits"), [(1, 0), (2, 1)])
def test_the_oldest_prefix_is_evicted_beyond_the_count(default_model: Path, kept: int, hits: int) -> None:
    """On CPU the engine never evicted (patches/mistralrs-core-0.8.1/0002-prefix-cache-eviction-memory-identical-prompts):
    with room for one cache, a prompt in between (sharing no token with the
    system prompt) must push the system prompt's cache out."""
    with Session(default_model, prefix_cache=kept) as session:
        session.chat(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=4)
        )
        session.complete("Zebras live in Africa and eat grass all day long.", SamplingParams(max_tokens=4))
        session.chat(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of Spain?"}], SamplingParams(max_tokens=4)
        )
        assert counters(session) == {"sequences": 3, "prefix_cache_hits": hits}


STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman."
# Both share a prefix with STORY, of different lengths: they decode in turn.
STORIES_IN_TURN = [
    "Once upon a time, in a small village by the sea, there lived a young girl named Lily who loved",
    "Once upon a time, in a small village by the sea, there was a bakery that sold",
]


def test_prefix_hits_in_turn_answer_as_alone(default_model: Path) -> None:
    """Regression (patches/mistralrs-core-0.8.1/0004-continuous-batching-on-cpu): when one of two
    sequences decoding in turn finished, the scheduler made the other read
    its whole context again as a prompt, onto the KV cache its prefix hit
    had kept ("owned by a baker was called" for "owned by a kind-hearted baker")."""
    with Session(default_model, prefix_cache=0) as plain:
        alone = [plain.complete(p, SamplingParams(max_tokens=24)).text for p in STORIES_IN_TURN]
    with Session(default_model, prefix_cache=16) as session:
        session.complete(STORY, SamplingParams(max_tokens=4))
        with ThreadPoolExecutor(max_workers=2) as pool:
            together = list(pool.map(lambda p: session.complete(p, SamplingParams(max_tokens=24)).text, STORIES_IN_TURN))
        assert counters(session) == {"sequences": 3, "prefix_cache_hits": 2}
    assert together == alone


def test_a_kept_prefix_holds_only_its_tokens(default_model: Path) -> None:
    """Each kept sequence held its whole KV buffer, sized for 512 tokens and
    more, or a view of its whole batch's (patches/mistralrs-core-0.8.1/0002-prefix-cache-eviction-memory-identical-prompts)."""
    with Session(default_model, prefix_cache=16) as session:
        before = settled_stats(session)  # the engine's warm-up at load keeps its own
        short = session.complete("The sky is", SamplingParams(max_tokens=4))
        after_short = settled_stats(session)
        long = session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4))
        after_long = settled_stats(session)
        per_token = bytes_per_token(session)
    assert after_long["prefix_cache_sequences"] == before["prefix_cache_sequences"] + 2
    # The KV cache holds every token but the last one generated.
    assert (
        after_short["prefix_cache_bytes"] - before["prefix_cache_bytes"]
        == (short.usage.prompt_tokens + short.usage.completion_tokens - 1) * per_token
    )
    assert (
        after_long["prefix_cache_bytes"] - after_short["prefix_cache_bytes"]
        == (long.usage.prompt_tokens + long.usage.completion_tokens - 1) * per_token
    )


@pytest.mark.parametrize(("limit_mib", "hits"), [(24, 0), (40, 1)])
def test_the_byte_limit_evicts_the_oldest(default_model: Path, limit_mib: int, hits: int) -> None:
    """Two long prompts (~700 tokens, ~15 MiB of KV data each): 24 MiB keeps
    only the newest, so the first one's prefix is gone; 40 MiB keeps both."""
    other = SYSTEM.replace("Rule", "Law")
    with Session(default_model, prefix_cache=16, prefix_cache_mem=limit_mib) as session:
        session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4))
        session.complete(other, SamplingParams(max_tokens=4))  # no chat template: no token in common
        held = settled_stats(session)["prefix_cache_bytes"]
        session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}], SamplingParams(max_tokens=4))
        assert counters(session) == {"sequences": 3, "prefix_cache_hits": hits}
        assert session.info()["prefix_cache_bytes_limit"] == limit_mib * 2**20
    assert 10 * 2**20 < held <= limit_mib * 2**20


def test_hits_on_kept_sequences_of_different_lengths_decode_together(default_model: Path) -> None:
    """A kept cache holds only its tokens; on a hit it must get back the room
    a fresh cache of its length has, or two hits on kept sequences of
    different lengths cannot share a batch (patches/mistralrs-core-0.8.1/0002-prefix-cache-eviction-memory-identical-prompts):
    each prompt below reuses a different kept sequence, at the same offset."""
    with Session(default_model, prefix_cache=16, max_num_seqs=8) as session:
        length = lambda prompt: len(session._engine.tokenize(prompt=prompt))  # noqa: E731
        assert length(STORY + " He") == length(STORY + " She") == length(STORY) + 1
        session.complete(STORY + " He", SamplingParams(max_tokens=2))
        session.complete(STORY + " She", SamplingParams(max_tokens=40))
        prompts = [STORY + " He zebra", STORY + " She zebra"]
        assert length(prompts[0]) == length(prompts[1])
        with ThreadPoolExecutor(max_workers=2) as pool:
            together = list(pool.map(lambda p: session.complete(p, SamplingParams(max_tokens=16)).text, prompts))
        # " She" hit the story kept with " He"; each prompt hit its own kept sequence.
        assert counters(session) == {"sequences": 4, "prefix_cache_hits": 3}
    with Session(default_model, prefix_cache=0) as plain:
        alone = [plain.complete(p, SamplingParams(max_tokens=16)).text for p in prompts]
    assert together == alone


def test_the_engine_publishes_its_cache_usage(default_model: Path) -> None:
    """KV-cache usage comes from the engine (patches/mistralrs-core-0.8.1/0005-engine-publishes-cache-usage):
    tokens of the sequences it holds (blocks too with paged attention, off on CPU)."""
    with Session(default_model, prefix_cache=4) as session:
        # Settled: the engine's warm-up request at load (one token of "hello")
        # may still be its last published step when the session returns.
        idle = settled_stats(session)
        stream = session.stream(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me a story."}], SamplingParams(max_tokens=200)
        )
        for _ in range(8):
            next(stream)
        during = session.engine_stats()
        stream.close()
        after = settled_stats(session)
    assert idle["kv_cache_tokens"] == 0 and after["kv_cache_tokens"] == 0
    assert during["kv_cache_tokens"] > 400  # the system prompt and the answer so far
    assert during["kv_cache_blocks_used"] is None and during["kv_cache_blocks"] is None


def test_prefix_cache_off_never_hits(default_model: Path) -> None:
    with Session(default_model, prefix_cache=0) as session:
        for question in ("Hi", "Hello"):
            session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}], SamplingParams(max_tokens=4))
        assert counters(session) == {"sequences": 2, "prefix_cache_hits": 0}
        assert session.info()["prefix_cache_n"] is None


def test_service_metrics_show_the_engine_counters(server: dict[str, str]) -> None:
    text = httpx.get(server["url"] + "/metrics", headers=AUTH, timeout=30).text
    assert "mistralvllm_prefix_cache_hits_total" in text and "mistralvllm_engine_sequences_total" in text
    for gauge in ("mistralvllm_prefix_cache_bytes", "mistralvllm_prefix_cache_sequences", "mistralvllm_kv_cache_tokens"):
        assert metric(server["url"], gauge) >= 0, gauge
    # Blocks exist with paged attention only (CUDA/Metal).
    assert "mistralvllm_kv_cache_usage_perc" not in text


def test_score_reads_text_instead_of_writing(session: Session) -> None:
    text = "The cat sat on the mat and looked out of the window at the birds in the garden."
    logprobs = session.score(text)
    assert all(lp <= 0 for lp in logprobs) and len(logprobs) >= 15
    shuffled = " ".join(reversed(text.split()))
    assert session.perplexity(text) < session.perplexity(shuffled)
    assert math.isclose(session.perplexity(text), math.exp(-sum(logprobs) / len(logprobs)))
    with pytest.raises(RequestError, match="shorter than 2 tokens"):
        session.score("Hi")


def test_kv_cache_type_needs_paged_attention(default_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="paged_cache_type: 'f8e4m3' sets the KV-cache type of paged attention, which is off"):
        Session(default_model, device="cpu", paged_cache_type="f8e4m3")
    with pytest.raises(ConfigError, match="'fp4' is not one of auto, f8e4m3"):
        Session(default_model, device="cpu", paged_cache_type="fp4")  # type: ignore[arg-type]
    config_file = tmp_path / "config.json"
    config_file.write_text('{"paged_attention": {"cache_type": "fp8"}}')
    with pytest.raises(ConfigError, match=r"paged_attention\.cache_type"):
        load_config(config_file)
