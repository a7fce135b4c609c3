"""Speculative decoding: a draft model proposes tokens, the model checks them
in one pass and keeps those it would have written. The default model drafted
by its own unquantized copy (the same tokenizer): greedy answers equal the
model's alone, the engine counts the draft tokens proposed and accepted
(`engine_stats`, ``/metrics``), and a draft that cannot work is refused
before anything loads."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mistralvllm import ConfigError, SamplingParams, Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from model_shapes import ModelShape

from model_makers import tiny_gguf
from service import API_KEY, start_server

QUESTIONS = [
    "What is the capital of Italy? Answer in one word.",
    "What is the chemical symbol for water?",
    "Write one sentence about the sea.",
]
GREEDY = SamplingParams(max_tokens=24)


@pytest.fixture(scope="module")
def drafted(default_model: Path, plain_model: Path) -> Iterator[Session]:
    with Session(default_model, draft_model=plain_model, draft_tokens=4) as session:
        yield session


def test_greedy_answers_equal_the_models_alone(drafted: Session, session: Session, plain_model: Path) -> None:
    info = drafted.info()
    assert info["draft_model"] == str(plain_model.resolve()) and info["draft_tokens"] == 4
    assert info["prefix_cache_n"] is None  # the prefix cache would restore the model's KV cache, not the draft's
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        assert drafted.chat(messages, GREEDY).text == session.chat(messages, GREEDY).text
    stats = drafted.engine_stats()
    proposed, accepted = stats["draft_tokens_proposed"], stats["draft_tokens_accepted"]
    assert proposed is not None and accepted is not None
    # Every step proposes 4; the unquantized copy agrees with the model on most tokens.
    assert proposed > 0 and proposed % 4 == 0 and proposed / 2 < accepted <= proposed
    plain = session.engine_stats()
    assert plain["draft_tokens_proposed"] is None and plain["draft_tokens_accepted"] is None


def test_a_draft_that_cannot_work_is_refused(default_model: Path, plain_model: Path) -> None:
    other_vocabulary = tiny_gguf(ModelShape("tiny-llama-vocab-50000", "llama", 64, 1, 2, 1, 128, 50000), default_model)
    with pytest.raises(ConfigError, match=r"draft_model: .*has a vocabulary of 50000 tokens, the model .* 49152: a draft must share"):
        Session(default_model, draft_model=other_vocabulary)
    with pytest.raises(ConfigError, match="draft_tokens: 0 is not between 1 and 32"):
        Session(default_model, draft_model=plain_model, draft_tokens=0)
    with pytest.raises(Exception, match="no such model file or directory"):
        Session(default_model, draft_model=plain_model.parent / "absent-draft")


@pytest.fixture(scope="module")
def drafted_server(plain_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_server(tmp_path_factory.mktemp("speculative"), extra_env={"MISTRALVLLM_MODEL__DRAFT__PATH": str(plain_model)})
    try:
        yield server.url
    finally:
        server.stop()


def test_the_service_counts_draft_tokens(drafted_server: str) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": httpx.get(drafted_server + "/v1/models", headers=headers).json()["data"][0]["id"], "max_tokens": 16}
    answer = httpx.post(
        drafted_server + "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": QUESTIONS[0]}]}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    metrics = httpx.get(drafted_server + "/metrics", headers=headers).text
    proposed = float(re.search(r"^mistralvllm_draft_tokens_total (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    accepted = float(re.search(r"^mistralvllm_draft_tokens_accepted_total (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert 0 < accepted <= proposed
    assert re.search(r'^vllm:spec_decode_num_draft_tokens_total\{model_name="[^"]+"\} ' + re.escape(f"{proposed}"), metrics, re.M)
