"""Chatting with the real default model: answers, determinism, streaming, usage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mistralvllm import ChatResult, RequestError, SamplingParams, Session
from prompts import HOT, ITALY, WATER


@pytest.mark.parametrize(
    ("messages", "keyword"),
    [(ITALY, "Rome"), (WATER, "H2O"), (HOT, "cold")],
)
def test_greedy_answers_are_correct(session: Session, messages, keyword: str) -> None:
    result = session.chat(messages, SamplingParams(max_tokens=48))
    assert isinstance(result, ChatResult)
    assert keyword.lower() in result.text.lower(), result.text


def test_greedy_is_deterministic(session: Session) -> None:
    first = session.chat(WATER, SamplingParams(max_tokens=32)).text
    second = session.chat(WATER, SamplingParams(max_tokens=32)).text
    assert first == second


def test_stream_concatenates_to_the_chat_text(session: Session) -> None:
    chunks = list(session.stream(ITALY, SamplingParams(max_tokens=32)))
    assert len(chunks) > 1
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None
    assert "".join(c.text for c in chunks) == session.chat(ITALY, SamplingParams(max_tokens=32)).text


def test_usage_agrees_with_the_tokenizer(session: Session) -> None:
    result = session.chat(HOT, SamplingParams(max_tokens=6))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 6
    assert result.usage.prompt_tokens == session.count_tokens(HOT)
    assert result.usage.total_tokens == result.usage.prompt_tokens + 6
    assert result.usage.time_to_first_token_s > 0
    assert result.usage.decode_tok_per_s > 0


def test_a_one_token_answer_reports_its_prompt_time(session: Session) -> None:
    # The answer ends inside the prompt's step, before the engine used to
    # record the prompt's time (patches/mistralrs-core-0.8.1/0010-streaming-and-usage).
    # A prompt no other test sends, so the prefix cache does not hold it.
    prompt = [{"role": "user", "content": "Name one planet of the solar system, in one word."}]
    result = session.chat(prompt, SamplingParams(max_tokens=1))
    assert result.usage.completion_tokens == 1
    assert result.usage.prompt_time_s > 0


def test_a_longer_conversation_counts_more_prompt_tokens(session: Session) -> None:
    first = session.chat(ITALY, SamplingParams(max_tokens=16))
    follow_up = [
        *ITALY,
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And of Spain?"},
    ]
    second = session.chat(follow_up, SamplingParams(max_tokens=16))
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_stop_sequence_ends_the_answer(session: Session) -> None:
    full = session.chat(ITALY, SamplingParams(max_tokens=32)).text
    assert "Rome" in full
    stopped = session.chat(ITALY, SamplingParams(max_tokens=32, stop=["Rome"]))
    assert stopped.finish_reason == "stop"
    assert "Rome" not in stopped.text
    assert full.startswith(stopped.text.rstrip())


def test_seeded_sampling_repeats_and_seeds_differ(default_model) -> None:
    # Without the prefix cache: a partial prefix hit computes the rest of the
    # prompt in another chunking, and the last-bit differences in the logits
    # can flip a sampled (not a greedy) token.
    prompt = [{"role": "user", "content": "Write a short poem about the sea."}]
    sampling = SamplingParams(max_tokens=24, temperature=1.0, top_p=0.95)
    with Session(default_model, prefix_cache=0) as session:
        session.chat(ITALY, SamplingParams(max_tokens=4))
        a = session.chat(prompt, sampling.replace(seed=11)).text
        b = session.chat(prompt, sampling.replace(seed=11)).text
        others = {session.chat(prompt, sampling.replace(seed=s)).text for s in (12, 13, 14)}
    assert a == b
    assert len(others | {a}) > 1


def test_json_schema_constrains_the_answer(session: Session) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"], "additionalProperties": False}
    for prompt in (ITALY, WATER, HOT):
        reply = json.loads(session.chat(prompt, SamplingParams(max_tokens=60, json_schema=schema)).text)
        assert list(reply) == ["answer"] and isinstance(reply["answer"], str)


def test_text_completion_continues_a_raw_prompt(session: Session) -> None:
    result = session.complete("The capital of Italy is", SamplingParams(max_tokens=5))
    assert "Rome" in result.text
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 5
    assert result.usage.prompt_tokens == len(session._engine.tokenize(prompt="The capital of Italy is"))
    streamed = "".join(c.text for c in session.stream_completion("The capital of Italy is", SamplingParams(max_tokens=5)))
    assert streamed == result.text


def test_an_answer_cut_inside_a_character_still_finishes(session: Session) -> None:
    # "★" is three byte tokens; an answer ending after the first (max_tokens)
    # or second lost its last chunk, and the stream closed without finishing
    # (patches/mistralrs-core-0.8.1/0010-streaming-and-usage).
    star = session.tokenize(prompt="★", add_special_tokens=False)
    assert len(star) == 3
    for cut in (1, 2):
        forced = {token: 100.0 for token in star[:cut]}
        result = session.chat(ITALY, SamplingParams(max_tokens=cut, logit_bias=forced))
        assert result.finish_reason == "length"
        assert result.text.endswith("\ufffd")
        assert result.usage.completion_tokens == cut


def test_an_answer_without_max_tokens_stops_at_the_context_window(tiny_model: Path, tmp_path: Path) -> None:
    # The tiny random llama never writes its end token; with a 96-token window
    # its answer fills what the prompt leaves (the engine ran past the window
    # by the prompt's length and failed: patches/mistralrs-core-0.8.1/0014).
    small_window = tmp_path / "tiny-96"
    shutil.copytree(tiny_model, small_window)
    config = json.loads((small_window / "config.json").read_text())
    (small_window / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 96}))
    with Session(small_window) as session:
        for result in (session.chat(ITALY), session.complete("The capital of Italy is")):
            assert result.finish_reason == "length"
            assert result.usage.prompt_tokens + result.usage.completion_tokens == 96


def test_a_chat_to_a_model_without_a_chat_template_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    # A base model's files carry no chat template; a chat panicked the
    # engine's thread and the client read "the engine dropped the tokenize
    # request" (patches/mistralrs-core-0.8.1/0026).
    base_model = tmp_path / "tiny-base"
    shutil.copytree(tiny_model, base_model)
    tokenizer_config = json.loads((base_model / "tokenizer_config.json").read_text())
    del tokenizer_config["chat_template"]
    (base_model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with Session(base_model) as session:
        assert session.info()["chat_template"] is None
        with pytest.raises(RequestError, match=r"no chat template.*completion") as refused:
            session.chat(ITALY, SamplingParams(max_tokens=4))
        assert str(refused.value).startswith(f"{base_model}: ")
        result = session.complete("The capital of Italy is", SamplingParams(max_tokens=4))
        assert result.usage.completion_tokens == 4
