"""Constrained decoding beyond JSON schemas: regular expressions and Lark
grammars, through Session and through the service (vLLM's guided_regex /
guided_grammar fields)."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from mistralvllm import RequestError, SamplingParams, Session
from service import API_KEY, AUTH, MODEL

DATE = r"\d{4}-\d{2}-\d{2}"
COLOURS = 'start: "red" | "green" | "blue"'


@pytest.mark.parametrize(
    "question,pattern",
    [("Is water wet? Answer yes or no.", r"(yes|no)"), ("When did the Berlin Wall fall? Give the date.", DATE), ("Pick a number.", r"[1-9][0-9]?")],
)
def test_regex_constrains_the_answer(session: Session, question: str, pattern: str) -> None:
    answer = session.chat([{"role": "user", "content": question}], SamplingParams(regex=pattern, max_tokens=16)).text
    assert re.fullmatch(pattern, answer), answer


def test_a_satisfied_constraint_ends_the_answer(session: Session) -> None:
    """Regression (patches/mistralrs-core-0.8.1/0003-constrained-decoding): once the constraint was
    complete the engine kept sampling the constraint's end token, which is
    not the model's, until max_tokens or the end of the context window."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "country": {"type": "string"}}, "required": ["name", "country"]}
    question = [{"role": "user", "content": "Name a city in Spain and its country."}]
    for constraint in ({"json_schema": schema}, {"regex": r"(yes|no)"}, {"grammar": COLOURS}):
        for max_tokens in (None, 300):
            result = session.chat(question, SamplingParams(max_tokens=max_tokens, **constraint))
            assert result.finish_reason == "stop", (constraint, result)
            assert result.usage.completion_tokens < 40, result


def test_lark_grammar_constrains_the_answer(session: Session) -> None:
    for question in ("Name a primary colour.", "What colour is the sky?", "What colour is grass?"):
        answer = session.chat([{"role": "user", "content": question}], SamplingParams(grammar=COLOURS, max_tokens=8)).text
        assert answer in {"red", "green", "blue"}, answer


@pytest.mark.parametrize(
    "constraint,fragment",
    [
        ({"regex": "(["}, "unclosed character class"),
        ({"grammar": "start: ???"}, "Invalid grammar"),
        ({"regex": "a", "grammar": 'start: "a"'}, "at most one of json_schema, regex and grammar"),
        ({"regex": "a", "json_schema": {"type": "object"}}, "at most one"),
    ],
)
def test_bad_constraints_are_request_errors(session: Session, constraint: dict[str, object], fragment: str) -> None:
    with pytest.raises(RequestError, match=re.escape(fragment)):
        session.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=4, **constraint))
    assert session.sequence_counts() == {"running": 0, "waiting": 0}


def test_service_guided_regex_and_grammar(server: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0)
    messages = [{"role": "user", "content": "When did the Berlin Wall fall? Give the date."}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, extra_body={"guided_regex": DATE})
    assert re.fullmatch(DATE, reply.choices[0].message.content)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, stream=True, extra_body={"guided_grammar": COLOURS}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) in {"red", "green", "blue"}
    text = client.completions.create(model=MODEL, prompt="The year the Berlin Wall fell:", max_tokens=8, extra_body={"guided_regex": r"\d{4}"})
    assert re.fullmatch(r"\d{4}", text.choices[0].text)


@pytest.mark.parametrize(
    "extra,fragment",
    [
        ({"guided_regex": "a", "guided_grammar": 'start: "a"'}, "at most one of guided_regex and guided_grammar"),
        ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "cannot be combined"),
        ({"guided_regex": "(["}, "unclosed character class"),
        ({"guided_regex": 5}, "guided_regex"),
    ],
)
def test_service_bad_guided_fields(server: dict[str, str], extra: dict[str, object], fragment: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    response = httpx.post(server["url"] + "/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


def test_service_bad_regex_while_streaming_is_an_error_event(server: dict[str, str]) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True, "guided_regex": "(["}
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert "unclosed character class" in events[-1] and '"error"' in events[-1]
