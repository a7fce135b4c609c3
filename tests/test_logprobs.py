"""Log-probabilities, logit bias, several answers (n) and tokenize/detokenize
through the Python API (patches/mistralrs-core-0.8.1/0009-sampling-log-probabilities-logit-bias-context)."""

from __future__ import annotations

import math

import httpx
import numpy as np
import openai
import pytest
from gguf import GGUFReader

from mistralvllm import RequestError, SamplingParams, Session, default_model_path
from service import API_KEY, AUTH, MODEL

QUESTION = [{"role": "user", "content": "Name three colours."}]


def test_logprobs_equal_the_score_of_the_same_text(session: Session) -> None:
    # A raw prompt: score() reads text, and a chat template's <|im_end|> would end it.
    prompt = "The three primary colours are"
    result = session.complete(prompt, SamplingParams(max_tokens=12, logprobs=True, top_logprobs=3))
    assert len(result.logprobs) == result.usage.completion_tokens == 12
    # Greedy: each chosen token is its position's most likely one.
    answer = [position.top_logprobs[0].token_id for position in result.logprobs]
    scored = session.score(session.tokenize(prompt=prompt) + answer)[-len(answer) :]
    for position, score in zip(result.logprobs, scored, strict=True):
        assert position.logprob == pytest.approx(score, abs=0.02)
        assert position.logprob == position.top_logprobs[0].logprob
        assert position.token == position.top_logprobs[0].token
    assert "".join(position.token for position in result.logprobs) == result.text


def test_top_logprobs_are_a_sorted_distribution(session: Session) -> None:
    result = session.chat(QUESTION, SamplingParams(max_tokens=4, temperature=0.9, seed=3, logprobs=True, top_logprobs=20))
    for position in result.logprobs:
        tops = [top.logprob for top in position.top_logprobs]
        assert len(tops) == 20 and tops == sorted(tops, reverse=True)
        assert all(value <= 0 for value in tops)
        assert 0.5 < sum(math.exp(value) for value in tops) <= 1 + 1e-4
        assert position.logprob <= tops[0]
    plain = session.chat(QUESTION, SamplingParams(max_tokens=4))
    assert plain.logprobs == ()


def test_logit_bias_bans_and_forces_a_token(session: Session) -> None:
    first = session.chat(QUESTION, SamplingParams(max_tokens=1, logprobs=True, top_logprobs=1)).logprobs[0].top_logprobs[0]
    banned = session.chat(QUESTION, SamplingParams(max_tokens=1, logprobs=True, logit_bias={first.token_id: -100}))
    assert banned.logprobs[0].token != first.token
    forced_id = session.tokenize(prompt=" banana", add_special_tokens=False)[0]
    forced = session.chat(QUESTION, SamplingParams(max_tokens=3, logit_bias={forced_id: 100}))
    assert forced.text == session.detokenize([forced_id] * 3).lstrip()  # a chat answer starts unspaced


def test_every_token_has_its_logprob_also_inside_a_character(session: Session) -> None:
    # "★" is three byte tokens. A token that ends inside a character shows no
    # text until the character is complete, and its log-probability was lost
    # with it: 4 tokens, 2 entries (patches/mistralrs-core-0.8.1/0010-streaming-and-usage).
    star = session.tokenize(prompt="★", add_special_tokens=False)
    forced = {token: 100.0 for token in star}
    chat = session.chat(QUESTION, SamplingParams(max_tokens=4, logprobs=True, logit_bias=forced))
    completion = session.complete("A star:", SamplingParams(max_tokens=4, logprobs=True, logit_bias=forced))
    for result in (chat, completion):
        assert result.usage.completion_tokens == 4
        assert len(result.logprobs) == 4
        assert [position.token for position in result.logprobs] == ["\ufffd"] * 4  # single bytes of "★"
    stream = session.stream(QUESTION, SamplingParams(max_tokens=4, logprobs=True, logit_bias=forced))
    streamed = [entry for chunk in stream for entry in chunk.logprobs]
    assert [entry.logprob for entry in streamed] == pytest.approx([entry.logprob for entry in chat.logprobs])


def test_n_answers_come_from_one_request(session: Session) -> None:
    result = session.chat(QUESTION, SamplingParams(max_tokens=8, temperature=1.0, seed=7), n=3)
    assert len(result.choices) == 3 and result.choices[0] is result
    assert len({choice.text for choice in result.choices}) > 1
    again = session.chat(QUESTION, SamplingParams(max_tokens=8, temperature=1.0, seed=7), n=3)
    assert [c.text for c in again.choices] == [c.text for c in result.choices]
    greedy = session.chat(QUESTION, SamplingParams(max_tokens=8), n=2)
    assert greedy.choices[0].text == greedy.choices[1].text
    assert all(choice.finish_reason == "length" for choice in result.choices)


def test_bad_logprob_options_are_refused(session: Session) -> None:
    with pytest.raises(RequestError, match=r"top_logprobs: Input should be less than or equal to 20 \(got 21\)"):
        session.chat(QUESTION, SamplingParams(max_tokens=1, logprobs=True, top_logprobs=21))
    with pytest.raises(RequestError, match="top_logprobs: needs logprobs=True"):
        session.chat(QUESTION, SamplingParams(max_tokens=1, top_logprobs=2))
    with pytest.raises(RequestError, match=r"logit_bias\.5: Input should be less than or equal to 100 \(got 101\.0\)"):
        session.chat(QUESTION, SamplingParams(max_tokens=1, logit_bias={5: 101.0}))
    with pytest.raises(RequestError, match="n: 0 is not valid"):
        session.chat(QUESTION, SamplingParams(max_tokens=1), n=0)


def test_tokenize_and_detokenize_round_trip(session: Session) -> None:
    text = "Paris is the capital of France."
    tokens = session.tokenize(prompt=text)
    assert session.detokenize(tokens) == text
    chat_tokens = session.tokenize(QUESTION)
    assert "<|im_start|>" in session.detokenize(chat_tokens)
    assert "<|im_start|>" not in session.detokenize(chat_tokens, skip_special_tokens=True)
    assert len(session.tokenize(QUESTION, add_generation_prompt=False)) < len(chat_tokens)
    with pytest.raises(RequestError, match="tokens: -1 is not a token id"):
        session.detokenize([-1])


def _client(server: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0)


def test_chat_logprobs_in_openais_shape(server: dict[str, str]) -> None:
    client = _client(server)
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=5, logprobs=True, top_logprobs=2)  # type: ignore[arg-type]
    choice = whole.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    assert len(content) == 5 and "".join(entry.token for entry in content) == choice.message.content
    for entry in content:
        assert entry.bytes == list(entry.token.encode()) and len(entry.top_logprobs) == 2
        assert entry.logprob == entry.top_logprobs[0].logprob <= 0
    streamed = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=5, logprobs=True, top_logprobs=2, stream=True)  # type: ignore[arg-type]
    tokens = [
        entry for chunk in streamed for choice in chunk.choices if choice.logprobs and choice.logprobs.content for entry in choice.logprobs.content
    ]
    assert [(t.token, t.logprob) for t in tokens] == [(t.token, t.logprob) for t in content]
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)  # type: ignore[arg-type]
    assert plain.choices[0].logprobs is None


def test_completion_logprobs_in_the_legacy_shape(server: dict[str, str]) -> None:
    prompt = "The capital of France is"
    completion = _client(server).completions.create(model=MODEL, prompt=prompt, max_tokens=4, logprobs=3)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None and logprobs.top_logprobs is not None
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert logprobs.text_offset == [len(prompt) + len("".join(logprobs.tokens[:i])) for i in range(4)]
    assert all(len(top) == 3 for top in logprobs.top_logprobs)


def test_logit_bias_and_bad_logprob_fields_over_http(server: dict[str, str]) -> None:
    client = _client(server)
    first = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1, logprobs=True, top_logprobs=1)  # type: ignore[arg-type]
    assert first.choices[0].logprobs is not None and first.choices[0].logprobs.content is not None
    token = first.choices[0].logprobs.content[0].token
    ids = httpx.post(server["url"] + "/tokenize", headers=AUTH, json={"model": MODEL, "prompt": token, "add_special_tokens": False}).json()["tokens"]
    banned = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1, logit_bias={str(ids[0]): -100})  # type: ignore[arg-type]
    assert banned.choices[0].message.content != first.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs: true"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1, top_logprobs=2)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1, logit_bias={"x": 1})  # type: ignore[arg-type]


def test_tokenize_and_detokenize_in_vllms_shape(server: dict[str, str]) -> None:
    tokenized = httpx.post(server["url"] + "/tokenize", headers=AUTH, json={"model": MODEL, "messages": QUESTION}).json()
    assert tokenized["count"] == len(tokenized["tokens"]) and tokenized["max_model_len"] > tokenized["count"]
    text = httpx.post(server["url"] + "/detokenize", headers=AUTH, json={"model": MODEL, "tokens": tokenized["tokens"]}).json()["prompt"]
    assert text.startswith("<|im_start|>") and "Name three colours." in text
    chat = _client(server).chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1)  # type: ignore[arg-type]
    assert chat.usage is not None and chat.usage.prompt_tokens == tokenized["count"]
    wrong = httpx.post(server["url"] + "/detokenize", headers=AUTH, json={"model": MODEL, "tokens": [10**9]})
    assert wrong.status_code == 400 and "10" in wrong.json()["error"]["message"]


def test_score_distributions_hold_the_scores(session: Session) -> None:
    text = "The three primary colours are red, yellow and blue."
    tokens = session.tokenize(prompt=text)
    rows = [np.frombuffer(row, "<f4") for row in session.score_distributions(tokens)]
    assert len(rows) == len(tokens) - 1
    scores = session.score(tokens)
    for row, token, score in zip(rows, tokens[1:], scores, strict=True):
        assert row[token] == pytest.approx(score, abs=1e-4)
        assert float(np.exp(row.astype(np.float64)).sum()) == pytest.approx(1.0, abs=1e-4)


def test_n_choices_over_http_whole_and_streamed(server: dict[str, str]) -> None:
    client = _client(server)
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, n=3, temperature=1.0, seed=5, logprobs=True)  # type: ignore[arg-type]
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    assert all(choice.finish_reason in ("length", "stop") for choice in whole.choices)
    assert len({choice.message.content for choice in whole.choices}) > 1
    tokens = sum(len(choice.logprobs.content or []) for choice in whole.choices if choice.logprobs)
    alone = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, temperature=1.0, seed=5)  # type: ignore[arg-type]
    assert whole.usage is not None and alone.usage is not None
    assert whole.usage.prompt_tokens == alone.usage.prompt_tokens and whole.usage.completion_tokens == tokens
    assert whole.choices[0].message.content == alone.choices[0].message.content  # choice 0 draws with the request's seed
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=6,
        n=3,
        temperature=1.0,
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = ["", "", ""]
    usage = None
    for chunk in streamed:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [choice.message.content for choice in whole.choices]
    assert usage is not None and usage.completion_tokens == tokens
    completions = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4, n=2, temperature=1.0, seed=1)
    assert [choice.index for choice in completions.choices] == [0, 1]
    assert completions.usage is not None and 2 <= completions.usage.completion_tokens <= 8


def test_n_and_best_of_bounds_are_clear_400s(server: dict[str, str]) -> None:
    client = _client(server)
    with pytest.raises(openai.BadRequestError, match="best_of is not supported"):
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=1, best_of=2)
    with pytest.raises(openai.BadRequestError, match=r"n: 100 answers cannot run at once; this engine runs at most \d+ sequences"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1, n=100)  # type: ignore[arg-type]


def test_tokenize_splits_as_the_models_own_tokenizer(session: Session) -> None:
    reader = GGUFReader(str(default_model_path()))
    field = reader.fields["tokenizer.ggml.tokens"]
    vocabulary = {bytes(field.parts[index]).decode(): token_id for token_id, index in enumerate(field.data)}
    # GPT-2's byte-level alphabet: "Ċ" is "\n", "Ġ" a space.
    expected = [vocabulary[piece] for piece in [".", "Ċ", "Ċ", "Today", "Ġis", "Ġ", "2", "0", "2", "4", "."]]
    assert session.tokenize(prompt=".\n\nToday is 2024.", add_special_tokens=False) == expected
