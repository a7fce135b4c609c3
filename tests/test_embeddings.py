"""Embeddings from an embedding model: a tiny random Qwen3 in the layout of
Qwen3-Embedding (sentence-transformers' modules.json: last-token pooling,
then normalization), its vectors checked against a float64 numpy forward pass
over the same weights (benches/reference_forward.py), through `Session.embed`,
OpenAI's ``/v1/embeddings`` (the openai client, float and base64) and
Ollama's ``/api/embed`` and ``/api/embeddings`` (the ollama client)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest

from mistralvllm import ContextOverflowError, RequestError, Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import reference_forward
from model_shapes import ModelShape

from model_makers import tiny_embedding_model, tiny_gguf
from service import API_KEY, start_server

SHAPE = ModelShape("tiny-qwen3-embedding", "qwen3", 128, 2, 4, 2, 256, 49152, head_dim=64)
TEXTS = ["The capital of Italy is Rome.", "Hello there", "A cat sat on the mat, and then it slept for a while.", "Rome"]
# float32 sums against the float64 reference (measured: 1.4e-7).
TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def embedding_model(default_model: Path, plain_model: Path) -> Path:
    return tiny_embedding_model(SHAPE, default_model, plain_model)


@pytest.fixture(scope="module")
def reference(default_model: Path) -> reference_forward.ReferenceModel:
    return reference_forward.load(tiny_gguf(SHAPE, default_model))


@pytest.fixture(scope="module")
def embedder(embedding_model: Path) -> Iterator[Session]:
    with Session(embedding_model) as session:
        yield session


def expected(reference: reference_forward.ReferenceModel, tokens: list[int]) -> np.ndarray:
    return reference_forward.embedding(reference, tokens)


def test_embeddings_equal_the_numpy_reference(embedder: Session, reference: reference_forward.ReferenceModel) -> None:
    info = embedder.info()
    assert info["task"] == "embedding" and embedder.task == "embedding"
    assert not info["paged_attention"] and info["prefix_cache_n"] is None
    found = embedder.embed(TEXTS)
    for text, embedding in zip(TEXTS, found, strict=True):
        tokens = embedder.tokenize(prompt=text)
        assert embedding.prompt_tokens == len(tokens) and embedding.dimensions == SHAPE.hidden
        assert np.abs(np.array(embedding.vector) - expected(reference, tokens)).max() < TOLERANCE
    # Different texts point in different directions.
    assert abs(np.dot(found[0].vector, found[1].vector)) < 0.99


def test_one_token_and_token_id_inputs(embedder: Session, reference: reference_forward.ReferenceModel) -> None:
    """One token: mistralrs-core 0019 (the engine panicked). Token ids embed as their text does."""
    (one,) = embedder.embed([[42]])
    assert one.prompt_tokens == 1
    assert np.abs(np.array(one.vector) - expected(reference, [42])).max() < TOLERANCE
    tokens = embedder.tokenize(prompt=TEXTS[0])
    assert embedder.embed([tokens])[0].vector == embedder.embed(TEXTS[0])[0].vector


def test_a_batch_equals_its_inputs_one_by_one(embedder: Session) -> None:
    """Inputs of several lengths, some equal (batched in one step), in order."""
    inputs = [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[2], TEXTS[1], TEXTS[3]]
    together = embedder.embed(inputs)
    for text, embedding in zip(inputs, together, strict=True):
        alone = embedder.embed(text)[0]
        assert np.abs(np.array(embedding.vector) - np.array(alone.vector)).max() < 1e-6


def test_dimensions_keep_the_leading_components_at_unit_length(embedder: Session) -> None:
    full, short = embedder.embed(TEXTS[0])[0], embedder.embed(TEXTS[0], dimensions=32)[0]
    head = np.array(full.vector[:32])
    assert short.dimensions == 32 and np.allclose(short.vector, head / np.linalg.norm(head), atol=1e-7)
    assert np.linalg.norm(short.vector) == pytest.approx(1.0)
    with pytest.raises(RequestError, match="dimensions: 129 is not between 1 and the model's 128"):
        embedder.embed(TEXTS[0], dimensions=129)


def test_bad_inputs_are_refused(embedder: Session) -> None:
    with pytest.raises(RequestError, match="input: expected at least one"):
        embedder.embed([])
    with pytest.raises(RequestError, match=r"input\[1\]: expected texts only or token-id lists only"):
        embedder.embed([[1, 2], "text"])  # type: ignore[list-item]
    with pytest.raises(RequestError, match=r"input\[0\]: .*empty prompt"):
        embedder.embed("")
    with pytest.raises(RequestError, match=r"an embedding model writes no text; use embed\(\)"):
        embedder.chat([{"role": "user", "content": "hello"}])


def test_a_chat_model_has_no_embeddings(session: Session) -> None:
    assert session.task == "chat"
    with pytest.raises(RequestError, match="a chat model has no embeddings; load an embedding model"):
        session.embed("hello")


def test_an_input_over_the_context_is_refused_or_cut(embedding_model: Path, tmp_path: Path, reference: reference_forward.ReferenceModel) -> None:
    small = tmp_path / "small-context"
    small.mkdir()
    for entry in embedding_model.iterdir():
        (small / entry.name).symlink_to(entry)
    config = json.loads((embedding_model / "config.json").read_text())
    (small / "config.json").unlink()
    (small / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 16}))
    long_text = " ".join(["word"] * 40)
    with Session(small) as session:
        tokens = session.tokenize(prompt=long_text)
        assert len(tokens) > 16
        with pytest.raises(ContextOverflowError) as raised:
            session.embed(long_text)
        assert raised.value.prompt_tokens == len(tokens) and raised.value.context_length == 16
        (cut,) = session.embed(long_text, truncate=True)
        assert cut.prompt_tokens == 16
        assert np.abs(np.array(cut.vector) - expected(reference, tokens[:16])).max() < TOLERANCE


@pytest.fixture(scope="module")
def service(default_model: Path, embedding_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    server = start_server(tmp_path_factory.mktemp("embeddings"), models=(str(default_model), "--model", str(embedding_model)))
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY)
        chat_name, embedding_name = [m.id for m in client.models.list()]
        yield {"url": server.url, "chat": chat_name, "embedding": embedding_name}
    finally:
        server.stop()


def test_openai_embeddings(service: dict[str, str], embedder: Session) -> None:
    client = openai.OpenAI(base_url=service["url"] + "/v1", api_key=API_KEY)
    local = embedder.embed(TEXTS)
    # The openai client asks for base64 unless told otherwise, and decodes it.
    answer = client.embeddings.create(model=service["embedding"], input=TEXTS)
    assert answer.model == service["embedding"] and [d.index for d in answer.data] == [0, 1, 2, 3]
    assert [d.embedding for d in answer.data] == [list(e.vector) for e in local]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(e.prompt_tokens for e in local)
    as_floats = client.embeddings.create(model=service["embedding"], input=TEXTS[0], encoding_format="float", dimensions=16)
    assert as_floats.data[0].embedding == pytest.approx(list(local[0].shortened(16).vector), abs=1e-7)
    tokens = embedder.tokenize(prompt=TEXTS[1])
    by_tokens = client.embeddings.create(model=service["embedding"], input=tokens)
    assert by_tokens.data[0].embedding == list(local[1].vector)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=service["chat"], input="hello")
    assert refused.value.body["param"] == "model" and "is a chat model, which computes no embeddings" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as chat_refused:
        client.chat.completions.create(model=service["embedding"], messages=[{"role": "user", "content": "hi"}])
    assert "an embedding model writes no text" in chat_refused.value.body["message"]


def test_ollama_embeddings(service: dict[str, str], embedder: Session) -> None:
    client = ollama.Client(host=service["url"], headers={"Authorization": f"Bearer {API_KEY}"})
    local = embedder.embed(TEXTS[:2])
    answer = client.embed(model=service["embedding"], input=TEXTS[:2])
    assert answer.model == service["embedding"] and answer.prompt_eval_count == sum(e.prompt_tokens for e in local)
    assert np.allclose(np.array(answer.embeddings), np.array([e.vector for e in local]), rtol=0, atol=1e-7)
    older = client.embeddings(model=service["embedding"], prompt=TEXTS[0])
    assert list(older.embedding) == pytest.approx(list(local[0].vector), abs=1e-7)
    assert client.embed(model=service["embedding"], input=[]).embeddings == []
    shown = client.show(service["embedding"])
    assert shown.capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model=service["chat"], input="hello")
    assert refused.value.status_code == 400 and "is a chat model" in refused.value.error
    bad = httpx.post(
        service["url"] + "/v1/embeddings", json={"model": service["embedding"], "input": [[1, -2]]}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert bad.status_code == 400


def test_the_command_prints_json_lines_and_chat_refuses(embedding_model: Path, embedder: Session, tmp_path: Path) -> None:
    env = {**os.environ, "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "history.sqlite3"), "XDG_DATA_HOME": str(tmp_path / "data")}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mistralvllm", *args], input=stdin, capture_output=True, text=True, env=env, timeout=300)

    local = embedder.embed(TEXTS[:2], dimensions=8)
    for result in (
        run("embed", "--model", str(embedding_model), "--dimensions", "8", *TEXTS[:2]),
        run("embed", "--model", str(embedding_model), "--dimensions", "8", stdin="\n".join(TEXTS[:2]) + "\n"),
    ):
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["index"] for line in lines] == [0, 1] and [line["prompt_tokens"] for line in lines] == [e.prompt_tokens for e in local]
        assert [line["embedding"] for line in lines] == [list(e.vector) for e in local]
    chat = run("chat", "--model", str(embedding_model), "--no-history", stdin="hello\n")
    assert chat.returncode == 1 and "an embedding model does not chat; use `mistralvllm embed" in chat.stderr
