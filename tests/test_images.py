"""Images in a chat, read by a vision model: a tiny random Gemma 3 with its
SigLIP tower (benches/vision_model.py), through `Session.chat`, OpenAI's
image_url parts (the openai client), Anthropic's image blocks (the anthropic
client), Ollama's images (the ollama client), Responses' input_image, the
command's ``--image`` and ``/image``, and the history, which stores each
image once, by digest."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import os
import socketserver
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import numpy as np
import ollama
import openai
import pytest
from tokenizers import Tokenizer

from mistralvllm import ContextOverflowError, RequestError, SamplingParams, Session
from mistralvllm._core import inspect_model
from mistralvllm.history import SQLiteHistory
from mistralvllm.images import ImageSources, aresolve_images, resolve_images

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import vision_reference
from vision_model import BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN, MM_TOKENS_PER_IMAGE, png_image

from model_makers import tiny_vision_model
from service import API_KEY, start_server

QUESTION = "What is in this picture?"
RED = png_image(56, 56, lambda x, y: (255, 0, 0))
BLUE = png_image(56, 56, lambda x, y: (0, 0, 255))
# A larger image: the processor resizes it to the tower's 56x56.
STRIPES = png_image(120, 80, lambda x, y: (255, 255, 255) if (x // 10) % 2 else (0, 128, 0))
GREEDY = SamplingParams(max_tokens=6, logprobs=True, top_logprobs=5)


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def asking(*images: bytes, text: str = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [*({"type": "image", "image": image} for image in images), {"type": "text", "text": text}]}]


def first_distribution(session: Session, messages: list[dict[str, Any]]) -> dict[int, float]:
    """The answer's first token's top-5 log-probabilities, by token id."""
    result = session.chat(messages, GREEDY)
    return {top.token_id: top.logprob for top in result.logprobs[0].top_logprobs}


def differ(a: dict[int, float], b: dict[int, float]) -> bool:
    return a.keys() != b.keys() or any(abs(a[k] - b[k]) > 1e-3 for k in a)


@pytest.fixture(scope="module")
def vision_model(plain_model: Path) -> Path:
    return tiny_vision_model(plain_model)


@pytest.fixture(scope="module")
def viewer(vision_model: Path) -> Iterator[Session]:
    with Session(vision_model) as session:
        yield session


def test_the_model_reads_images(viewer: Session, vision_model: Path, session: Session) -> None:
    assert inspect_model(vision_model)["vision"] is True and viewer.info()["vision"] is True
    assert viewer.info()["num_layers"] == 2 and viewer.info()["architecture"] == "Gemma3ForConditionalGeneration"
    assert session.info()["vision"] is False


def test_an_image_moves_the_next_token_distribution(viewer: Session) -> None:
    text_only = first_distribution(viewer, [{"role": "user", "content": QUESTION}])
    red = first_distribution(viewer, asking(RED))
    blue = first_distribution(viewer, asking(BLUE))
    assert differ(text_only, red) and differ(text_only, blue) and differ(red, blue)
    # The same image again (after another, past the prefix and encoder caches) reads the same.
    assert not differ(first_distribution(viewer, asking(RED)), red)
    # Two images differ from either alone.
    assert differ(first_distribution(viewer, asking(RED, BLUE)), red)


def test_an_image_prompt_equals_the_numpy_reference(viewer: Session, vision_model: Path) -> None:
    """The first answer token's top log-probabilities after an image prompt
    equal a float64 forward pass of the same weights (vision_reference)."""
    model = vision_reference.load(vision_model)
    tokenizer = Tokenizer.from_file(str(vision_model / "tokenizer.json"))
    for colour in ((255, 0, 0), (0, 0, 255), (10, 200, 90)):
        messages = asking(png_image(56, 56, lambda x, y, colour=colour: colour))
        # The engine's processor puts the image's soft tokens where the template put its marker.
        rendered = viewer.detokenize(viewer.tokenize(messages))
        expanded = rendered.replace(BOI_TOKEN, f"\n\n{BOI_TOKEN}{IMAGE_TOKEN * MM_TOKENS_PER_IMAGE}{EOI_TOKEN}\n\n")
        ids = tokenizer.encode(expanded, add_special_tokens=False).ids
        expected = vision_reference.next_token_logprobs(model, ids, [np.broadcast_to(np.array(colour, np.float64), (56, 56, 3))])
        result = viewer.chat(messages, SamplingParams(max_tokens=1, logprobs=True, top_logprobs=5))
        assert result.usage.prompt_tokens == len(ids)
        top = result.logprobs[0].top_logprobs
        assert [t.token_id for t in top] == [int(i) for i in np.argsort(-expected)[:5]]
        assert max(abs(t.logprob - expected[t.token_id]) for t in top) < 1e-3


def test_the_prompt_holds_the_image_tokens(viewer: Session) -> None:
    text_only = viewer.chat([{"role": "user", "content": QUESTION}], GREEDY).usage.prompt_tokens
    with_image = viewer.chat(asking(STRIPES), GREEDY).usage.prompt_tokens
    # The template's <start_of_image> becomes "\n\n", the marker, the soft tokens, the end marker and "\n\n".
    assert with_image - text_only >= MM_TOKENS_PER_IMAGE + 2


def test_images_come_as_bytes_files_and_urls(viewer: Session, tmp_path: Path) -> None:
    file = tmp_path / "red.png"
    file.write_bytes(RED)
    expected = viewer.chat(asking(RED), GREEDY).text
    for part in (
        {"type": "image", "image": file},
        {"type": "image", "image": str(file)},
        {"type": "image_url", "image_url": {"url": data_url(RED)}},
        {"type": "image_url", "image_url": {"url": file.as_uri()}},
    ):
        messages = [{"role": "user", "content": [part, {"type": "text", "text": QUESTION}]}]
        assert viewer.chat(messages, GREEDY).text == expected, part


def test_streams_and_batches_with_images(viewer: Session) -> None:
    alone = [viewer.chat(asking(image), GREEDY).text for image in (RED, BLUE)]
    streams = [viewer.stream(asking(image), GREEDY) for image in (RED, BLUE)]
    together = ["".join(chunk.text for chunk in stream) for stream in streams]
    assert together == alone


def test_bad_images_are_refused(viewer: Session, session: Session, tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=r"messages\[0\]\.content\[0\]\.image: not an image"):
        viewer.chat(asking(b"hello, not an image"))
    truncated = RED[:40]
    with pytest.raises(RequestError, match=r"messages\[0\]\.content\[0\]: not an image the engine can read"):
        viewer.chat(asking(truncated))
    with pytest.raises(RequestError, match=r"messages\[0\]\.content\[0\]\.image: cannot read the image .*missing\.png"):
        viewer.chat([{"role": "user", "content": [{"type": "image", "image": tmp_path / "missing.png"}]}])
    with pytest.raises(RequestError, match=r"image_url\.url: http\(s\) images are not fetched here"):
        viewer.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    with pytest.raises(RequestError, match=r"content\[0\]\.type: 'audio' is not one of text, image"):
        viewer.chat([{"role": "user", "content": [{"type": "audio"}]}])
    with pytest.raises(RequestError, match="this model reads text only; images cannot be given to it"):
        session.chat(asking(RED))
    # The session still answers after each refusal.
    assert viewer.chat(asking(RED), GREEDY).finish_reason == "length"


def test_http_images_are_fetched_where_allowed_within_the_size_limit(tmp_path: Path) -> None:
    """server.images.fetch_http: an http URL is read (here from a local
    server), and one over max_bytes is refused, as is any over the limit."""
    (tmp_path / "red.png").write_bytes(RED)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as served:
        threading.Thread(target=served.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{served.server_address[1]}/red.png"
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]}]
        try:
            fetched = asyncio.run(aresolve_images(messages, ImageSources(fetch_http=True)))
            assert fetched[0]["content"][0] == {"type": "image", "image": RED}
            with pytest.raises(RequestError, match=r"content\[0\]\.image_url\.url: .* is over the 64 bytes an image may have"):
                asyncio.run(aresolve_images(messages, ImageSources(fetch_http=True, max_bytes=64)))
            with pytest.raises(RequestError, match="http\\(s\\) images are not fetched here"):
                asyncio.run(aresolve_images(messages, ImageSources()))
        finally:
            served.shutdown()
    with pytest.raises(RequestError, match=r"content\[0\]\.image: the image is \d+ bytes, over the 64 an image may have"):
        resolve_images(asking(RED), ImageSources(local_root=tmp_path, max_bytes=64))


def test_images_over_the_context_window_are_refused(vision_model: Path, tmp_path: Path) -> None:
    """The prompt fits as text and not once its images become image tokens
    (mistralrs-core 0022: the model read past its position tables)."""
    small = tmp_path / "small-context"
    small.mkdir()
    for entry in vision_model.iterdir():
        if entry.name != "config.json":
            (small / entry.name).symlink_to(entry)
    config = json.loads((vision_model / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 24
    (small / "config.json").write_text(json.dumps(config))
    with Session(small) as session:
        messages = asking(RED, BLUE, text="What is it?")
        assert session.count_tokens(messages) < 24
        with pytest.raises(ContextOverflowError) as raised:
            session.chat(messages, SamplingParams(max_tokens=2))
        assert raised.value.context_length == 24 and raised.value.prompt_tokens > 24
        assert session.chat(asking(RED, text="Hi"), SamplingParams(max_tokens=2)).usage.completion_tokens == 2


def test_the_history_stores_an_image_once(viewer: Session, tmp_path: Path) -> None:
    history = SQLiteHistory(tmp_path / "history.sqlite3")
    conversation = history.new(model="tiny-vision")
    for text in ("first", "second"):
        fitted = conversation.fit(text, images=[RED], count_tokens=viewer.count_tokens, budget=1024, reserve=8)
        turn = conversation.begin_turn(text, images=[RED])
        turn.finish(viewer.chat(fitted.messages, GREEDY).text)
    stored = history.messages(conversation.id)
    assert [m.images for m in stored] == [(RED,), (), (RED,), ()]
    assert stored[0].as_request()["content"][0] == {"type": "image", "image": RED}
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM images").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM message_images").fetchone() == (2,)
    exported = json.loads(history.export(conversation.id))
    assert exported["messages"][0]["images"][0]["data_url"] == data_url(RED)
    history.delete(conversation.id)
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM images").fetchone() == (0,)


@pytest.fixture(scope="module")
def service(default_model: Path, vision_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("images")
    local = tmp / "pictures"
    local.mkdir()
    (local / "blue.png").write_bytes(BLUE)
    server = start_server(
        tmp,
        models=(str(vision_model), "--model", str(default_model)),
        extra_env={"MISTRALVLLM_SERVER__IMAGES__LOCAL_DIR": str(local)},
    )
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY)
        vision_name, text_name = [m.id for m in client.models.list()]
        yield {"url": server.url, "vision": vision_name, "text": text_name, "local": str(local), "history": str(server.history)}
    finally:
        server.stop()


def test_openai_image_url_parts(service: dict[str, str], viewer: Session) -> None:
    client = openai.OpenAI(base_url=service["url"] + "/v1", api_key=API_KEY)
    expected = {name: viewer.chat(asking(image), SamplingParams(max_tokens=6)).text for name, image in (("red", RED), ("blue", BLUE))}

    def ask(url: str, model: str | None = None, conversation: str | None = None) -> str:
        answer = client.chat.completions.create(
            model=model or service["vision"],
            max_tokens=6,
            extra_headers={"X-Conversation-Id": conversation} if conversation else None,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]}],
        )
        return answer.choices[0].message.content or ""

    assert ask(data_url(RED)) == expected["red"]
    # A file under server.images.local_dir is read; elsewhere it is not.
    assert ask(Path(service["local"], "blue.png").as_uri()) == expected["blue"]
    for url, message in (
        ("file:///etc/hostname", "is outside"),
        ("https://example.com/a.png", "http(s) images are not fetched here"),
        ("data:image/png;base64,aGVsbG8=", "not an image"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            ask(url)
        assert message in refused.value.body["message"] and refused.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as text_only:
        ask(data_url(RED), service["text"])
    assert "reads text only" in text_only.value.body["message"]
    # A stored conversation keeps its questions' images, each image once.
    for _ in range(2):
        assert ask(data_url(RED), conversation="pictures") == expected["red"]
    with sqlite3.connect(service["history"]) as db:
        stored = db.execute(
            "SELECT count(DISTINCT i.digest), count(*) FROM message_images mi JOIN images i ON i.digest = mi.digest"
            " JOIN messages m ON m.id = mi.message_id WHERE m.conversation_id = 'pictures'"
        ).fetchone()
    assert stored == (1, 2)


def test_anthropic_image_blocks(service: dict[str, str], viewer: Session) -> None:
    client = anthropic.Anthropic(base_url=service["url"], api_key=API_KEY)
    expected = viewer.chat(asking(RED), SamplingParams(max_tokens=6)).text
    answer = client.messages.create(
        model=service["vision"],
        max_tokens=6,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(RED).decode()}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )
    assert answer.content[0].text == expected


def test_ollama_images(service: dict[str, str], viewer: Session) -> None:
    client = ollama.Client(host=service["url"], headers={"Authorization": f"Bearer {API_KEY}"})
    options = {"num_predict": 6, "temperature": 0}
    expected = viewer.chat(asking(BLUE), SamplingParams(max_tokens=6)).text
    answer = client.chat(model=service["vision"], messages=[{"role": "user", "content": QUESTION, "images": [BLUE]}], options=options)
    assert answer.message.content == expected
    generated = client.generate(model=service["vision"], prompt=QUESTION, images=[BLUE], options=options)
    assert generated.response == expected
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model=service["text"], messages=[{"role": "user", "content": QUESTION, "images": [BLUE]}])
    assert refused.value.status_code == 400 and "reads text only" in refused.value.error


def test_responses_input_image(service: dict[str, str], viewer: Session) -> None:
    client = openai.OpenAI(base_url=service["url"] + "/v1", api_key=API_KEY)
    expected = viewer.chat(asking(RED), SamplingParams(max_tokens=6)).text
    answer = client.responses.create(
        model=service["vision"],
        max_output_tokens=6,
        input=[{"role": "user", "content": [{"type": "input_image", "image_url": data_url(RED)}, {"type": "input_text", "text": QUESTION}]}],
    )
    assert answer.output_text == expected
    # The next turn (previous_response_id) sends the stored image again: the same prompt as asking twice.
    follow = client.responses.create(model=service["vision"], max_output_tokens=6, previous_response_id=answer.id, input="And now?")
    assert follow.usage.input_tokens > answer.usage.input_tokens
    bad = httpx.post(
        service["url"] + "/v1/responses",
        json={
            "model": service["vision"],
            "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}],
        },
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]["message"]


def test_the_command_attaches_images(vision_model: Path, viewer: Session, default_model: Path, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(RED)
    env = {
        **os.environ,
        "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "history.sqlite3"),
        "MISTRALVLLM_SAMPLING__MAX_TOKENS": "6",
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mistralvllm", "chat", "--json", *args], input=QUESTION, capture_output=True, text=True, env=env, timeout=300
        )

    answered = run("--model", str(vision_model), "--image", str(image))
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["text"] == viewer.chat(asking(RED), SamplingParams(max_tokens=6)).text
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM message_images").fetchone() == (1,)
    refused = run("--model", str(default_model), "--image", str(image))
    assert refused.returncode == 1 and "reads text only" in refused.stderr
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    bad = run("--model", str(vision_model), "--image", str(not_an_image))
    assert bad.returncode == 1 and "not an image" in bad.stderr
