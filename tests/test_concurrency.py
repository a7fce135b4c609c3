"""Many callers on one session: threads, asyncio tasks, abandoned streams."""

from __future__ import annotations

import asyncio
import gc
from concurrent.futures import ThreadPoolExecutor

from mistralvllm import SamplingParams, Session
from prompts import HOT, ITALY, WATER


def test_four_threads_chat_at_once(session: Session) -> None:
    questions = [(ITALY, "rome"), (WATER, "h2o"), (HOT, "cold"), (ITALY, "rome")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda q: session.chat(q[0], SamplingParams(max_tokens=48)).text, questions))
    for (_, keyword), answer in zip(questions, answers, strict=True):
        assert keyword in answer.lower(), answer


def test_concurrent_answers_match_sequential_ones(session: Session) -> None:
    alone = session.chat(WATER, SamplingParams(max_tokens=24)).text
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(pool.map(lambda m: session.chat(m, SamplingParams(max_tokens=24)).text, [WATER, ITALY, HOT]))
    assert together[0] == alone


def test_equal_length_prompts_do_not_leak_into_each_other(session: Session) -> None:
    """Regression: mistral.rs 0.8.1 decoded a CPU batch of equal-length
    sequences with one sequence's attention for all (fixed by
    patches/mistralrs-core-0.8.1/0001-cpu-attention-kernel; more in test_batching.py)."""
    france = [{"role": "user", "content": "What is the capital city of France?"}]
    assert session.count_tokens(france) == session.count_tokens(WATER)
    alone = [session.chat(m, SamplingParams(max_tokens=20)).text for m in (WATER, france)]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=2) as pool:
            together = list(pool.map(lambda m: session.chat(m, SamplingParams(max_tokens=20)).text, [WATER, france]))
        assert together == alone


def test_breaking_out_of_a_stream_lets_the_next_request_finish(session: Session) -> None:
    long_prompt = [{"role": "user", "content": "Count from one to five hundred in words."}]
    stream = session.stream(long_prompt, SamplingParams(max_tokens=400))
    for i, _ in enumerate(stream):
        if i == 3:
            break
    del stream
    gc.collect()
    assert "rome" in session.chat(ITALY, SamplingParams(max_tokens=32)).text.lower()


def test_closed_stream_stops_iterating(session: Session) -> None:
    stream = session.stream(ITALY, SamplingParams(max_tokens=32))
    first = next(stream)
    assert first.text
    stream.close()
    assert stream.closed
    assert list(stream) == []


def test_async_streams_run_together(session: Session) -> None:
    async def answer(messages) -> str:
        return "".join([chunk.text async for chunk in session.astream(messages, SamplingParams(max_tokens=48))])

    async def main() -> list[str]:
        return await asyncio.gather(answer(ITALY), answer(WATER), session.achat(HOT, SamplingParams(max_tokens=48)))

    italy, water, hot = asyncio.run(main())
    assert "rome" in italy.lower()
    assert "h2o" in water.lower()
    assert "cold" in hot.text.lower()
