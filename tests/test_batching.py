"""Continuous batching on CPU: sequences decoded in one step keep their own
answers (patches/mistralrs-core-0.8.1/0001 fixed the batched decode
attention that made them leak into each other)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mistralvllm import Session

# Eight questions: some of equal prompt length (decoded in one batch from
# the first step), some of other lengths (they join the batch as they catch up).
QUESTIONS = [
    "What is the chemical symbol for water?",
    "What is the capital city of France?",
    "What is the opposite of hot?",
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
    "How many legs does a spider have? Explain briefly.",
    "What do bees make?",
    "Tell me a short fact about the Moon and the tides it causes on Earth.",
]
MESSAGES = [[{"role": "user", "content": q}] for q in QUESTIONS]


@pytest.fixture(scope="module")
def batch_session(default_model: Path) -> Iterator[Session]:
    """No prefix cache: a cache hit reads the prompt in another shape, which
    may change the last bits of the logits, and these tests compare exactly."""
    with Session(default_model, prefix_cache=0, max_num_seqs=8) as session:
        yield session


@pytest.fixture(scope="module")
def alone(batch_session: Session) -> list[str]:
    return [batch_session.chat(m, max_tokens=24).text for m in MESSAGES]


def test_prompts_include_equal_and_different_lengths(batch_session: Session) -> None:
    lengths = [batch_session.count_tokens(m) for m in MESSAGES]
    assert len(set(lengths)) < len(lengths) < 2 * len(set(lengths)) + 1, lengths
    assert len(set(lengths)) > 1


def test_eight_concurrent_chats_answer_as_they_do_alone(batch_session: Session, alone: list[str]) -> None:
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=8) as pool:
            together = list(pool.map(lambda m: batch_session.chat(m, max_tokens=24).text, MESSAGES))
        assert together == alone


def test_one_thread_reads_two_streams_at_once(batch_session: Session, alone: list[str]) -> None:
    first, second = batch_session.stream(MESSAGES[0], max_tokens=24), batch_session.stream(MESSAGES[1], max_tokens=24)
    texts = ["", ""]
    streams = [first, second]
    while any(not s.closed for s in streams):
        for i, stream in enumerate(streams):
            chunk = next(stream, None)
            if chunk is not None:
                texts[i] += chunk.text
    assert texts == alone[:2]


def test_closing_one_stream_mid_batch_leaves_the_others_intact(batch_session: Session, alone: list[str]) -> None:
    streams = [batch_session.stream(m, max_tokens=24) for m in MESSAGES[:4]]
    texts = [next(s).text for s in streams]
    streams[1].close()
    for i in (0, 2, 3):
        texts[i] += "".join(chunk.text for chunk in streams[i])
    assert [texts[i] for i in (0, 2, 3)] == [alone[i] for i in (0, 2, 3)]
    assert streams[1].closed and list(streams[1]) == []
    assert batch_session.sequence_counts()["running"] == 0


def test_info_reports_the_engine_limit(batch_session: Session) -> None:
    assert batch_session.info()["max_running_sequences"] == 8


def test_different_lengths_decode_in_one_step(batch_session: Session) -> None:
    """Once past their prompts, chats of different lengths are all run by
    the engine at each step; none is held back to wait for its length's turn."""
    messages = [
        [{"role": "user", "content": f"Write a long story about {topic}."}]
        for topic in ("a cat", "an old lighthouse keeper", "the sea at night in winter")
    ]
    assert len({batch_session.count_tokens(m) for m in messages}) == 3
    streams = [batch_session.stream(m, max_tokens=200) for m in messages]
    try:
        for stream in streams:
            next(stream)
        # Every stream has its first token: all three are decoding. Read a few
        # more tokens so the engine has stepped with the three together.
        for _ in range(4):
            for stream in streams:
                next(stream)
        stats = batch_session.engine_stats()
        assert stats["sequences_running"] == 3, stats
        assert stats["sequences_waiting"] == 0, stats
    finally:
        for stream in streams:
            stream.close()
