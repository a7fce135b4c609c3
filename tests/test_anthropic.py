"""Anthropic's Messages API on the service, driven by the real `anthropic`
client over loopback: whole and streamed answers, tools, token counts, the
history, and errors in Anthropic's shape."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema_rs
import pytest
from anthropic.types import Message

from prompts import HOT, ITALY, WATER
from service import API_KEY, AUTH, MODEL

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ADD = {
    "name": "add",
    "description": "Add two numbers.",
    "input_schema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
}


@pytest.fixture
def client(server: dict[str, str]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server["url"], api_key=API_KEY, max_retries=0)


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def blocks(message: Message) -> list[tuple[str, object]]:
    """The content blocks' types and what they say (streamed messages hold subclasses)."""
    return [(block.type, block.text if block.type == "text" else (block.name, block.input)) for block in message.content]


def test_create_answers_as_a_message(client: anthropic.Anthropic) -> None:
    # Any anthropic-version is accepted (the client sends its own by default).
    # cache_control is accepted; the engine's prefix cache reuses any prompt start by itself.
    reply = client.messages.create(
        model=MODEL, max_tokens=32, messages=ITALY, cache_control={"type": "ephemeral"}, extra_headers={"anthropic-version": "1999-12-31"}
    )
    assert reply.id.startswith("msg_") and reply.type == "message" and reply.role == "assistant" and reply.model == MODEL
    assert [block.type for block in reply.content] == ["text"] and "Rome" in text_of(reply)
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    # The same prompt as the OpenAI route's (tests/test_server.py): 42 tokens.
    assert reply.usage.input_tokens == 42 and reply.usage.output_tokens > 0


def test_stream_gives_the_same_message(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model=MODEL, max_tokens=32, messages=WATER)
    with client.messages.stream(model=MODEL, max_tokens=32, messages=WATER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == text_of(whole) and "H2O" in text_of(whole)
    assert blocks(final) == blocks(whole) and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens and final.usage.output_tokens == whole.usage.output_tokens
    assert final.id.startswith("msg_") and final.id != whole.id


def test_stream_events_in_anthropics_order(client: anthropic.Anthropic) -> None:
    with client.messages.create(model=MODEL, max_tokens=8, messages=HOT, stream=True) as events:
        kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[2:-3] == ["content_block_delta"] * (len(kinds) - 5)
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize(
    "system",
    ["Your name is Zorblax.", [{"type": "text", "text": "Your name is Zorblax.", "cache_control": {"type": "ephemeral"}}]],
    ids=["string", "blocks"],
)
def test_system_prompt_is_honoured(client: anthropic.Anthropic, system: object) -> None:
    question = [{"role": "user", "content": "What is your name?"}]
    plain = client.messages.create(model=MODEL, max_tokens=24, messages=question)
    named = client.messages.create(model=MODEL, max_tokens=24, messages=question, system=system)
    assert "Zorblax" not in text_of(plain) and "Zorblax" in text_of(named)


def test_sampling_fields_reach_the_engine(client: anthropic.Anthropic) -> None:
    poem = [{"role": "user", "content": "Write a short poem about the sea."}]
    greedy = text_of(client.messages.create(model=MODEL, max_tokens=20, messages=poem))
    sampled = [client.messages.create(model=MODEL, max_tokens=20, messages=poem, extra_body={"temperature": 1.0}) for _ in range(2)]
    assert any(text_of(answer) != greedy for answer in sampled)
    # top_k 1 is greedy at any temperature.
    top_1 = client.messages.create(model=MODEL, max_tokens=20, messages=poem, extra_body={"temperature": 1.0, "top_p": 0.9, "top_k": 1})
    assert text_of(top_1) == greedy
    with pytest.raises(anthropic.BadRequestError, match="top_p: Input should be less than or equal to 1"):
        client.messages.create(model=MODEL, max_tokens=4, messages=poem, extra_body={"top_p": 2})


def test_max_tokens_ends_the_answer(client: anthropic.Anthropic) -> None:
    short = client.messages.create(model=MODEL, max_tokens=3, messages=HOT)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    with client.messages.stream(model=MODEL, max_tokens=3, messages=HOT) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3 and blocks(final) == blocks(short)


def test_stop_sequences_end_the_answer(client: anthropic.Anthropic) -> None:
    # More than OpenAI's 4 stop strings: Anthropic's API has no such limit.
    stops = ["Zanzibar", "Berlin", "Madrid", "Paris", "Rome"]
    reply = client.messages.create(model=MODEL, max_tokens=32, messages=ITALY, stop_sequences=stops)
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == "Rome"
    assert text_of(reply).startswith("The capital of Italy is") and "Rome" not in text_of(reply)
    with client.messages.stream(model=MODEL, max_tokens=32, messages=ITALY, stop_sequences=stops) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "Rome" and blocks(final) == blocks(reply)
    # A stop string the answer never reaches leaves the end of its turn as it was.
    whole = client.messages.create(model=MODEL, max_tokens=32, messages=ITALY, stop_sequences=stops[:4])
    assert whole.stop_reason == "end_turn" and whole.stop_sequence is None and "Rome" in text_of(whole)


def test_tool_call_round_trip(client: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = client.messages.create(model=MODEL, max_tokens=64, messages=question, tools=[WEATHER, ADD], tool_choice={"type": "any"})
    assert call.stop_reason == "tool_use"
    (block,) = call.content
    assert block.type == "tool_use" and block.name in {"get_weather", "add"} and isinstance(block.input, dict)
    schema = next(tool for tool in (WEATHER, ADD) if tool["name"] == block.name)["input_schema"]
    assert jsonschema_rs.validator_for(schema).is_valid(block.input), block.input
    # The call goes back as the assistant's content, its result as a tool_result block.
    result = {"type": "tool_result", "tool_use_id": block.id, "content": "sunny, 21 C"}
    follow_up = [*question, {"role": "assistant", "content": call.content}, {"role": "user", "content": [result]}]
    answer = client.messages.create(model=MODEL, max_tokens=32, messages=follow_up, tools=[WEATHER, ADD])
    assert answer.stop_reason == "end_turn" and [b.type for b in answer.content] == ["text"] and text_of(answer).strip()
    assert answer.usage.input_tokens > call.usage.input_tokens


def test_named_tool_streams_its_input(client: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    choice = {"type": "tool", "name": "add"}
    with client.messages.stream(model=MODEL, max_tokens=64, messages=question, tools=[WEATHER, ADD], tool_choice=choice) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds and final.stop_reason == "tool_use"
    (block,) = final.content
    assert block.type == "tool_use" and block.name == "add" and jsonschema_rs.validator_for(ADD["input_schema"]).is_valid(block.input)


def test_tool_choice_none_answers_in_text(client: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.messages.create(model=MODEL, max_tokens=16, messages=question, tools=[WEATHER], tool_choice={"type": "none"})
    assert reply.stop_reason in ("end_turn", "max_tokens") and [b.type for b in reply.content] == ["text"]


@pytest.mark.parametrize(
    "extra",
    [{}, {"system": "Answer briefly."}, {"tools": [WEATHER, ADD], "tool_choice": {"type": "any"}}],
    ids=["plain", "system", "tools"],
)
def test_count_tokens_is_the_prompts_input_tokens(client: anthropic.Anthropic, extra: dict[str, object]) -> None:
    counted = client.messages.count_tokens(model=MODEL, messages=ITALY, **extra)
    reply = client.messages.create(model=MODEL, max_tokens=4, messages=ITALY, **extra)
    assert counted.input_tokens == reply.usage.input_tokens > 0


def test_the_turn_is_stored_in_the_history(client: anthropic.Anthropic, server: dict[str, str]) -> None:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=32, messages=ITALY, extra_headers={"X-Conversation-Id": "anthropic-turn"})
    reply = raw.parse()
    assert raw.headers["x-conversation-id"] == "anthropic-turn"
    with client.messages.stream(model=MODEL, max_tokens=8, messages=HOT, metadata={"user_id": "anthropic-user"}) as stream:
        streamed = stream.get_final_message()
    for conversation, question, answer in (("anthropic-turn", ITALY, reply), ("anthropic-user", HOT, streamed)):
        stored = httpx.get(f"{server['url']}/v1/conversations/{conversation}", headers=AUTH).json()
        assert [(m["role"], m["content"]) for m in stored["messages"]] == [("user", question[0]["content"]), ("assistant", text_of(answer))]
        assert stored["messages"][1]["finish_reason"] == ("stop" if answer.stop_reason == "end_turn" else "length")


# ---- errors, in Anthropic's shape --------------------------------------------------


def raw_create(client: anthropic.Anthropic, body: dict[str, object]) -> Message:
    """A request the client's typed method would not send (e.g. without max_tokens)."""
    return client.post("/v1/messages", body=body, cast_to=Message)


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"model": MODEL, "messages": ITALY}, "max_tokens: Field required"),
        ({"model": MODEL, "messages": ITALY, "max_tokens": "ten"}, "max_tokens: Input should be a valid integer"),
        ({"model": MODEL, "messages": ITALY, "max_tokens": 8, "temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"model": MODEL, "messages": "hi", "max_tokens": 8}, "messages: Input should be a valid list"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}], "max_tokens": 8}, "messages.0.role"),
        (
            {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}]},
            "messages: SmolLM2-135M-Instruct.Q4_1 reads text only; images cannot be given to it",
        ),
        (
            {"model": MODEL, "max_tokens": 8, "messages": ITALY, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "add"}},
            "tool_choice.name: 'add' is not one of the tools (get_weather)",
        ),
        ({"model": MODEL, "max_tokens": 8, "messages": [*ITALY, {"role": "assistant", "content": "The"}]}, "prefill"),
        ({"model": MODEL, "max_tokens": 8, "messages": ITALY, "thinking": {"type": "enabled", "budget_tokens": 1}}, "does not think before"),
    ],
    ids=["no max_tokens", "max_tokens text", "temperature above 1", "messages string", "bad role", "image", "unknown tool", "prefill", "thinking"],
)
def test_bad_requests_raise_bad_request_error(client: anthropic.Anthropic, body: dict[str, object], fragment: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        raw_create(client, body)
    assert raised.value.body["type"] == "error" and raised.value.body["error"]["type"] == "invalid_request_error"
    assert fragment in raised.value.body["error"]["message"]


def test_unknown_model_wrong_key_and_overflow(client: anthropic.Anthropic, server: dict[str, str]) -> None:
    with pytest.raises(anthropic.NotFoundError, match=f"model 'claude-sonnet-4-5' does not exist; this service serves '{MODEL}'") as missing:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=ITALY)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-sonnet-4-5", messages=ITALY)
    wrong = anthropic.Anthropic(base_url=server["url"], api_key="wrong-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError, match="API key") as refused:
        wrong.messages.create(model=MODEL, max_tokens=8, messages=ITALY)
    assert refused.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError, match=r"the prompt has 9\d{3} tokens .* context window is 8192 tokens"):
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "word " * 9000}])
    with pytest.raises(anthropic.BadRequestError, match="context window is 8192"):
        client.messages.create(model=MODEL, max_tokens=8192, messages=ITALY, stream=True)


def test_an_error_after_the_stream_began_is_an_error_event(client: anthropic.Anthropic) -> None:
    # The engine compiles a forced tool call's schema once the stream has
    # begun: a type it does not know is refused then.
    broken = {"name": "add", "description": "Add.", "input_schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}
    forced = {"type": "tool", "name": "add"}
    with client.messages.create(model=MODEL, max_tokens=8, messages=ITALY, stream=True, tools=[broken], tool_choice=forced) as events:
        assert next(events).type == "message_start"
        with pytest.raises(anthropic.APIStatusError, match="strin") as raised:
            list(events)
    assert raised.value.body["type"] == "error" and raised.value.body["error"]["type"] == "invalid_request_error"
    # A value no engine count holds is refused before the stream, naming it.
    with pytest.raises(anthropic.BadRequestError, match="top_k"):
        client.messages.create(model=MODEL, max_tokens=8, messages=ITALY, stream=True, extra_body={"top_k": 2**64})
    # The service still answers.
    assert "Rome" in text_of(client.messages.create(model=MODEL, max_tokens=16, messages=ITALY))


def test_error_bodies_are_anthropics_also_for_unparsed_bodies(server: dict[str, str]) -> None:
    for content in (b"not json", b'{"model": "' + b"x" * (2 << 20) + b'"}'):
        response = httpx.post(server["url"] + "/v1/messages", content=content, headers={**AUTH, "Content-Type": "application/json"})
        body = response.json()
        assert response.status_code in (400, 413) and set(body) == {"type", "error"} and body["type"] == "error", body
        assert body["error"]["type"] == ("invalid_request_error" if response.status_code == 400 else "request_too_large")
    assert json.loads(httpx.get(server["url"] + "/health").text)["status"] == "ok"
