"""Prefix caching (a repeated long system prompt is reused), the engine's
counters in info/metrics, scoring text, and the KV-cache type setting."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mistralvllm import ConfigError, RequestError, Session
from mistralvllm.config import load_config
from service import AUTH

SYSTEM = " ".join(
    f"Rule {n}: answer politely, briefly and truthfully, and say so when you do not know something about topic number {n}." for n in range(1, 25)
)


def test_repeated_system_prompt_hits_the_prefix_cache(default_model: Path) -> None:
    with Session(default_model, prefix_cache=4) as session:
        assert session.info()["prefix_cache_n"] == 4
        assert session.engine_stats() == {"sequences": 0, "prefix_cache_hits": 0}
        first = session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}], max_tokens=8)
        second = session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of Spain?"}], max_tokens=8)
        stats = session.engine_stats()
        info = session.info()
    assert info["prefix_cache_hits"] == 1 and info["sequences"] == 2
    assert first.usage.prompt_tokens > 400 and stats == {"sequences": 2, "prefix_cache_hits": 1}
    # Reported, not asserted (timings): the engine's prompt time with and without the hit.
    print(f"\nprompt of {first.usage.prompt_tokens} tokens: {first.usage.prompt_time_s:.3f} s cold, {second.usage.prompt_time_s:.3f} s from the prefix cache")


@pytest.mark.parametrize(("kept", "hits"), [(1, 0), (2, 1)])
def test_the_oldest_prefix_is_evicted_beyond_the_count(default_model: Path, kept: int, hits: int) -> None:
    """On CPU the engine never evicted (patches/mistralrs-core-0.8.1/0002):
    with room for one cache, a prompt in between (sharing no token with the
    system prompt) must push the system prompt's cache out."""
    with Session(default_model, prefix_cache=kept) as session:
        session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}], max_tokens=4)
        session.complete("Zebras live in Africa and eat grass all day long.", max_tokens=4)
        session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of Spain?"}], max_tokens=4)
        assert session.engine_stats() == {"sequences": 3, "prefix_cache_hits": hits}


STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman."
# Both share a prefix with STORY, of different lengths: they decode in turn.
STORIES_IN_TURN = [
    "Once upon a time, in a small village by the sea, there lived a young girl named Lily who loved",
    "Once upon a time, in a small village by the sea, there was a bakery that sold",
]


def test_prefix_hits_in_turn_answer_as_alone(default_model: Path) -> None:
    """Regression (patches/mistralrs-core-0.8.1/0004): when one of two
    sequences decoding in turn finished, the scheduler made the other read
    its whole context again as a prompt, onto the KV cache its prefix hit
    had kept ("owned by a baker was called" for "owned by a kind-hearted baker")."""
    with Session(default_model, prefix_cache=0) as plain:
        alone = [plain.complete(p, max_tokens=24).text for p in STORIES_IN_TURN]
    with Session(default_model, prefix_cache=16) as session:
        session.complete(STORY, max_tokens=4)
        with ThreadPoolExecutor(max_workers=2) as pool:
            together = list(pool.map(lambda p: session.complete(p, max_tokens=24).text, STORIES_IN_TURN))
        assert session.engine_stats() == {"sequences": 3, "prefix_cache_hits": 2}
    assert together == alone


def test_prefix_cache_off_never_hits(default_model: Path) -> None:
    with Session(default_model, prefix_cache=0) as session:
        for question in ("Hi", "Hello"):
            session.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}], max_tokens=4)
        assert session.engine_stats() == {"sequences": 2, "prefix_cache_hits": 0}
        assert session.info()["prefix_cache_n"] is None


def test_service_metrics_show_the_engine_counters(server: dict[str, str]) -> None:
    text = httpx.get(server["url"] + "/metrics", headers=AUTH, timeout=30).text
    assert "mistralvllm_prefix_cache_hits_total" in text and "mistralvllm_engine_sequences_total" in text


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
    with pytest.raises(ConfigError, match="paged_attention.cache_type"):
        load_config(config_file)
