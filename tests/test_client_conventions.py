"""What clients send besides the letter of each API: JSON bodies without a
JSON content type (``curl -d``, Ollama's own examples), llama-server's
``response_format`` schema form, and top-level fields this service does not
know (ignored, and logged once)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema_rs
import ollama
import openai
import pytest

from prompts import ITALY
from service import API_KEY, AUTH, MODEL

QUESTION = ITALY[0]["content"]
# Each surface's route, a body asking it the question, and where its answer's text is.
SURFACES: dict[str, tuple[dict[str, Any], Any]] = {
    "/v1/chat/completions": ({"model": MODEL, "messages": ITALY, "max_tokens": 8}, lambda body: body["choices"][0]["message"]["content"]),
    "/v1/completions": ({"model": MODEL, "prompt": "The capital of Italy is", "max_tokens": 8}, lambda body: body["choices"][0]["text"]),
    "/v1/messages": ({"model": MODEL, "messages": ITALY, "max_tokens": 8}, lambda body: body["content"][0]["text"]),
    "/v1/responses": ({"model": MODEL, "input": QUESTION, "max_output_tokens": 8}, lambda body: body["output"][0]["content"][0]["text"]),
    "/api/chat": ({"model": MODEL, "messages": ITALY, "options": {"num_predict": 8}}, lambda body: body["message"]["content"]),
    "/api/generate": ({"model": MODEL, "prompt": QUESTION, "options": {"num_predict": 8}}, lambda body: body["response"]),
}
# The last server-sent event of each stream (Ollama's stream is JSON lines).
STREAM_ENDS = {
    "/v1/chat/completions": "data: [DONE]",
    "/v1/completions": "data: [DONE]",
    "/v1/messages": "event: message_stop",
    "/v1/responses": "event: response.completed",
}
# `curl -d` sends a form's content type; some clients send text or none.
NOT_JSON_CONTENT_TYPES = {"curl -d": "application/x-www-form-urlencoded", "text": "text/plain; charset=utf-8", "none": None}
CAPITAL = {
    "type": "object",
    "properties": {"capital": {"type": "string"}, "country": {"type": "string"}},
    "required": ["capital", "country"],
    "additionalProperties": False,
}


def post(url: str, body: bytes, content_type: str | None) -> httpx.Response:
    headers = AUTH if content_type is None else {**AUTH, "Content-Type": content_type}
    return httpx.post(url, content=body, headers=headers, timeout=120)


@pytest.mark.parametrize("path", SURFACES)
def test_json_without_a_json_content_type_is_read_as_json(server: dict[str, str], path: str) -> None:
    body, answer_text = SURFACES[path]
    with_json = post(server["url"] + path, json.dumps({**body, "stream": False}).encode(), "application/json")
    assert with_json.status_code == 200, with_json.text
    for name, content_type in NOT_JSON_CONTENT_TYPES.items():
        whole = post(server["url"] + path, json.dumps({**body, "stream": False}).encode(), content_type)
        assert whole.status_code == 200 and answer_text(whole.json()) == answer_text(with_json.json()), (name, whole.text)
        streamed = post(server["url"] + path, json.dumps({**body, "stream": True}).encode(), content_type)
        assert streamed.status_code == 200 and stream_ended(path, streamed.text), (name, streamed.text[-300:])


def stream_ended(path: str, text: str) -> bool:
    """Whether a stream closed as its API closes one: Ollama's last JSON line
    says done; the others' last server-sent event is their closing one."""
    if path.startswith("/api/"):
        return json.loads(text.strip().splitlines()[-1])["done"] is True
    return STREAM_ENDS[path] in text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/api/chat"])
def test_a_body_that_is_not_json_stays_a_clear_400(server: dict[str, str], path: str) -> None:
    response = post(server["url"] + path, b"model=smol&messages=hi", NOT_JSON_CONTENT_TYPES["curl -d"])
    assert response.status_code == 400
    error = response.json()["error"]
    assert "JSON" in (error if isinstance(error, str) else error["message"]), response.text


def test_llama_servers_json_object_with_a_schema(server: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0)
    question = [{"role": "user", "content": "Name a country and its capital, as JSON."}]
    schema_form: Any = {"type": "json_object", "schema": CAPITAL}
    reply = client.chat.completions.create(model=MODEL, messages=question, max_tokens=80, response_format=schema_form)  # type: ignore[arg-type]
    parsed = json.loads(reply.choices[0].message.content or "")
    assert jsonschema_rs.validator_for(CAPITAL).is_valid(parsed) and set(parsed) == {"capital", "country"}, parsed
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=question, max_tokens=8, response_format={"type": "text", "schema": CAPITAL})  # type: ignore[typeddict-unknown-key]
    assert bad.value.body["param"] == "response_format" and "schema goes with type 'json_object'" in bad.value.message  # type: ignore[index]


def test_unknown_top_level_fields_are_answered_and_logged_once(server: dict[str, str]) -> None:
    extra = {"zz_client_field": 1, "zz_newer_field": {"nested": True}}
    openai_client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0)
    for _ in range(2):
        chat = openai_client.chat.completions.create(model=MODEL, messages=ITALY, max_tokens=8, extra_body=extra)  # type: ignore[arg-type]
        assert "Rome" in (chat.choices[0].message.content or "")
    response = openai_client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=8, extra_body=extra)
    assert "Rome" in response.output_text
    message = anthropic.Anthropic(base_url=server["url"], api_key=API_KEY, max_retries=0).messages.create(
        model=MODEL,
        max_tokens=8,
        messages=ITALY,  # type: ignore[arg-type]
        extra_body=extra,
    )
    assert "Rome" in message.content[0].text  # type: ignore[union-attr]
    ollama_answer = httpx.post(server["url"] + "/api/chat", json={**SURFACES["/api/chat"][0], "stream": False, **extra}, headers=AUTH, timeout=60)
    assert ollama_answer.status_code == 200 and "Rome" in ollama_answer.json()["message"]["content"]
    assert ollama.Client(host=server["url"], headers=AUTH).chat(model=MODEL, messages=ITALY, options={"num_predict": 8}).message.content
    logged = [line for line in Path(server["log"]).read_text().splitlines() if "zz_client_field" in line]
    ignored = re.compile(r"WARNING: (\w+): ignored the request fields this service does not know: zz_client_field, zz_newer_field$")
    assert sorted(match[1] for line in logged if (match := ignored.search(line))) == [
        "ChatCompletionRequest",
        "ChatRequest",
        "MessagesRequest",
        "ResponseRequest",
    ], logged
    assert len(logged) == 4, logged
