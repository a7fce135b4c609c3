"""A thinking model's reasoning, apart from its answer: a tiny random Qwen3
whose chat template opens a ``<think>`` block (as DeepSeek-R1's distills and
thinking Qwen3 templates do), its answer forced by a regular expression to
think, close the block and answer. The engine splits at the tags; every
surface carries the two parts apart, streamed and whole: `Session`, OpenAI's
``reasoning_content``/``reasoning``, Ollama's ``thinking``, Anthropic's
thinking blocks. ``think=False`` reaches the template's ``enable_thinking``."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import ollama
import openai
import pexpect
import pytest

from mistralvllm import SamplingParams, Session
from mistralvllm.history import SQLiteHistory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from model_shapes import ModelShape

from model_makers import tiny_gguf
from service import API_KEY, start_server

THINKING = ModelShape("tiny-qwen3-thinking", "qwen3", 128, 2, 4, 2, 256, 49152, head_dim=64)
# ChatML whose generation prompt opens the thinking, unless enable_thinking is false (then an empty block is closed).
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}"
)
THOUGHT, ANSWER = "[a-z]{3,6}( [a-z]{3,6}){2}", "[a-z]{3,6}( [a-z]{3,6}){1,2}"
FORCED = f"{THOUGHT}</think>{ANSWER}"
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def thinking_model(default_model: Path) -> Path:
    return tiny_gguf(THINKING, default_model, chat_template=TEMPLATE)


@pytest.fixture(scope="module")
def thinking_server(thinking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_server(tmp_path_factory.mktemp("thinking"), models=(str(thinking_model),))
    try:
        yield server.url
    finally:
        server.stop()


def test_the_thinking_is_apart_from_the_answer_whole_and_streamed(thinking_model: Path) -> None:
    sampling = SamplingParams(max_tokens=60, regex=FORCED)
    with Session(thinking_model, prefix_cache=0) as session:
        whole = session.chat(QUESTION, sampling)
        chunks = list(session.stream(QUESTION, sampling))
        unthinking = SamplingParams(max_tokens=60, regex=ANSWER, think=False)
        plain = session.chat(QUESTION, unthinking)
        # The context check counts the prompt as the template renders it for the request.
        counted, counted_thinking = session.count_tokens(QUESTION, unthinking), session.count_tokens(QUESTION)
    assert re.fullmatch(THOUGHT, whole.reasoning.strip()), whole
    assert re.fullmatch(ANSWER, whole.text.strip()), whole
    assert "think>" not in whole.reasoning + whole.text
    assert "".join(c.reasoning for c in chunks) == whole.reasoning and "".join(c.text for c in chunks) == whole.text
    assert any(c.reasoning and not c.text for c in chunks), "the thinking streams before the answer"
    assert plain.reasoning == "" and re.fullmatch(ANSWER, plain.text.strip()), plain
    assert plain.usage.prompt_tokens == counted != counted_thinking and whole.usage.prompt_tokens == counted_thinking


def test_the_chat_folds_the_thinking_and_the_history_keeps_it_apart(thinking_model: Path, tmp_path: Path) -> None:
    """In a terminal the reasoning streams dimmed, then folds into one line;
    ``/thinking`` unfolds it; the history stores it apart from the answer."""
    history = tmp_path / "history.sqlite3"
    env = {**os.environ, "MISTRALVLLM_HISTORY__PATH": str(history), "XDG_DATA_HOME": str(tmp_path / "data"), "COLUMNS": "200"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mistralvllm", "chat", "--model", str(thinking_model), "--regex", FORCED],
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 200),
    )
    try:
        child.expect("conversation ([0-9a-f]{17})")
        conversation_id = child.match.group(1)
        child.expect(">>>")
        child.sendline(QUESTION[0]["content"])
        child.expect(r"\(thought for [0-9.]+ s, 3 words; /thinking shows it\)")
        child.expect(">>>")
        question, answer = SQLiteHistory(history).messages(conversation_id)
        assert question.reasoning is None
        assert answer.reasoning is not None and re.fullmatch(THOUGHT, answer.reasoning.strip()), answer
        assert re.fullmatch(ANSWER, answer.content.strip()) and "</think>" not in answer.content
        child.sendline("/thinking")
        child.expect(re.escape(answer.reasoning.strip()))
        child.expect(">>>")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_openai_reasoning_content(thinking_server: str, thinking_model: Path) -> None:
    client = openai.OpenAI(base_url=f"{thinking_server}/v1", api_key=API_KEY, max_retries=0)
    model = thinking_model.stem
    body = {"extra_body": {"guided_regex": FORCED}}
    message = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=60, **body).choices[0].message
    extra = message.model_extra or {}
    assert re.fullmatch(THOUGHT, extra["reasoning_content"].strip()) and extra["reasoning"] == extra["reasoning_content"]
    assert re.fullmatch(ANSWER, (message.content or "").strip())
    stream = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=60, stream=True, **body)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == extra["reasoning_content"]
    assert "".join(d.content or "" for d in deltas) == message.content
    off = client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=60, extra_body={"guided_regex": ANSWER, "chat_template_kwargs": {"enable_thinking": False}}
    )
    assert "reasoning_content" not in (off.choices[0].message.model_extra or {})


def test_responses_reasoning_item(thinking_server: str, thinking_model: Path) -> None:
    client = openai.OpenAI(base_url=f"{thinking_server}/v1", api_key=API_KEY, max_retries=0)
    model = thinking_model.stem
    response = client.responses.create(model=model, input="Why is the sky blue?", max_output_tokens=12, reasoning={"effort": "low"})
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content and reasoning.content[0].text, response
    assert message.type == "message"
    events = list(client.responses.create(model=model, input="Why is the sky blue?", max_output_tokens=12, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert deltas == reasoning.content[0].text
    (done,) = [e for e in events if e.type == "response.incomplete"]  # at max_output_tokens
    assert done.response.output[0].type == "reasoning" and done.response.output[1].type == "message"
    # The output sent back as input, reasoning item included, is taken (the reasoning is left out of the prompt).
    sent_back = [*(item.model_dump() for item in response.output), {"role": "user", "content": "Why?"}]
    assert client.responses.create(model=model, input=sent_back, max_output_tokens=4).status == "incomplete"


def test_ollama_thinking(thinking_server: str, thinking_model: Path) -> None:
    client = ollama.Client(host=thinking_server, headers={"Authorization": f"Bearer {API_KEY}"})
    # Ollama's options have no constraint: its format (a JSON schema) is not a think block; a regex through /api/generate raw is.
    model = thinking_model.stem
    whole = client.chat(model=model, messages=QUESTION, think=True, options={"num_predict": 12})
    streamed = list(client.chat(model=model, messages=QUESTION, think=True, options={"num_predict": 12}, stream=True))
    assert whole.message.thinking, whole
    assert "".join(part.message.thinking or "" for part in streamed) == whole.message.thinking
    assert "".join(part.message.content for part in streamed) == whole.message.content


def test_anthropic_thinking_blocks(thinking_server: str, thinking_model: Path) -> None:
    client = anthropic.Anthropic(base_url=thinking_server, api_key=API_KEY, max_retries=0)
    model = thinking_model.stem
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(model=model, max_tokens=12, messages=QUESTION, thinking=thinking)
    assert message.content[0].type == "thinking" and message.content[0].thinking, message
    with client.messages.stream(model=model, max_tokens=12, messages=QUESTION, thinking=thinking) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].type == "thinking" and streamed.content[0].thinking == message.content[0].thinking
