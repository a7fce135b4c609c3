"""OpenAI's Responses API on the service, driven by the real `openai` client:
whole and streamed answers, conversations continued by previous_response_id
from the history, function tools, structured output and bad input."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from prompts import ITALY
from service import API_KEY, MODEL

QUESTION = ITALY[0]["content"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
CAPITAL_SCHEMA = {
    "type": "object",
    "properties": {"capital": {"type": "string"}, "country": {"type": "string"}},
    "required": ["capital", "country"],
    "additionalProperties": False,
}


class Capital(BaseModel):
    capital: str
    country: str


@pytest.fixture
def client(server: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0)


def stored_messages(client: openai.OpenAI, response_id: str) -> list[dict[str, Any]]:
    """The messages of a response's conversation in the service's history."""
    conversation: dict[str, Any] = client.get(f"/conversations/{response_id}", cast_to=object)
    return conversation["messages"]


def test_a_string_input_is_answered_and_stored(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=32)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.status == "completed" and response.incomplete_details is None
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert "Rome" in response.output_text == message.content[0].text
    usage = response.usage
    # The same prompt as the chat completion in test_server: the same 42 tokens.
    assert usage.input_tokens == 42 and 0 < usage.output_tokens <= 32 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    # Read from the prefix cache in part when an earlier test asked the same (shared server).
    assert 0 <= usage.input_tokens_details.cached_tokens < usage.input_tokens and usage.output_tokens_details.reasoning_tokens == 0
    assert [(m["role"], m["content"]) for m in stored_messages(client, response.id)] == [("user", QUESTION), ("assistant", response.output_text)]
    again = client.responses.retrieve(response.id)
    assert again.output == response.output and again.status == "completed"
    # The history keeps the token counts; the prefix cache's share is told only when answered.
    assert (again.usage.input_tokens, again.usage.output_tokens, again.usage.total_tokens) == (
        usage.input_tokens,
        usage.output_tokens,
        usage.total_tokens,
    )


def test_input_items_are_the_conversation(client: openai.OpenAI) -> None:
    as_string = client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=32)
    as_parts = client.responses.create(
        model=MODEL, input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}], max_output_tokens=32
    )
    assert as_parts.output_text == as_string.output_text and as_parts.usage.input_tokens == as_string.usage.input_tokens
    named = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Your name is Zorblax."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello! How can I help?"}]},
            {"role": "user", "content": "What is your name?"},
        ],
        max_output_tokens=30,
    )
    assert "Zorblax" in named.output_text
    assert [m["role"] for m in stored_messages(client, named.id)] == ["system", "user", "assistant", "user", "assistant"]


def test_instructions_are_the_system_message(client: openai.OpenAI) -> None:
    instructed = client.responses.create(model=MODEL, input="What is your name?", instructions="Your name is Zorblax.", max_output_tokens=30)
    assert "Zorblax" in instructed.output_text and instructed.instructions == "Your name is Zorblax."
    system = [{"role": "system", "content": "Your name is Zorblax."}, {"role": "user", "content": "What is your name?"}]
    explicit = client.responses.create(model=MODEL, input=system, max_output_tokens=30)
    assert (explicit.output_text, explicit.usage.input_tokens) == (instructed.output_text, instructed.usage.input_tokens)
    assert client.responses.retrieve(instructed.id).instructions == "Your name is Zorblax."
    # As in OpenAI's API, instructions are not carried over to the next response.
    follow_up = client.responses.create(model=MODEL, input="Say hi.", previous_response_id=instructed.id, max_output_tokens=8)
    assert follow_up.instructions is None and client.responses.retrieve(follow_up.id).instructions is None


def test_max_output_tokens_leaves_it_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Write a long story about a dragon.", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3 and response.output[0].status == "incomplete" and response.output_text
    assert client.responses.retrieve(response.id).incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(model=MODEL, input="Write a long story about a dragon.", max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output_text == response.output_text


def test_the_stream_adds_up_to_the_final_response(client: openai.OpenAI) -> None:
    whole = client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=32)
    with client.responses.stream(model=MODEL, input=QUESTION, max_output_tokens=32) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == final.output_text == whole.output_text
    assert final.status == "completed" and final.usage.output_tokens == whole.usage.output_tokens
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_streamed_events_come_in_openais_order(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=32, stream=True))
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    created, completed = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.id == completed.id
    message = completed.output[0]
    assert {(e.item_id, e.output_index, e.content_index) for e in events if e.type == "response.output_text.delta"} == {(message.id, 0, 0)}
    assert events[-4].text == completed.output_text and events[-2].item == message


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=32)
    spain = "And of Spain? Answer in one word."
    second = client.responses.create(model=MODEL, input=spain, previous_response_id=first.id, max_output_tokens=32)
    # The second prompt holds the first exchange: the same as sending it again.
    resent = client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first.output_text}, {"role": "user", "content": spain}],
        max_output_tokens=32,
    )
    assert second.usage.input_tokens == resent.usage.input_tokens and second.output_text == resent.output_text
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.previous_response_id == first.id
    stored = [(m["role"], m["content"]) for m in stored_messages(client, second.id)]
    assert stored == [("user", QUESTION), ("assistant", first.output_text), ("user", spain), ("assistant", second.output_text)]
    assert len(stored_messages(client, first.id)) == 2  # the first response is kept as it was


def test_unknown_and_unstored_responses_are_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model=MODEL, input="Hi", previous_response_id="resp_nosuchresponse", max_output_tokens=4)
    assert unknown.value.body["param"] == "previous_response_id" and "resp_nosuchresponse" in unknown.value.message
    assert unknown.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError, match="resp_nosuchresponse"):
        client.responses.retrieve("resp_nosuchresponse")
    unstored = client.responses.create(model=MODEL, input="Hi", store=False, max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    deleted = client.responses.create(model=MODEL, input="Hi", max_output_tokens=4)
    client.responses.delete(deleted.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(deleted.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="Hi", previous_response_id=deleted.id, max_output_tokens=4)


def test_a_function_call_round_trip(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = client.responses.create(model=MODEL, input=question, tools=[WEATHER], tool_choice="required", max_output_tokens=64)
    (call,) = called.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert set(json.loads(call.arguments)) == {"city"} and call.call_id
    assert client.responses.retrieve(called.id).output == called.output
    # The client sends the call back with its result, as OpenAI's guide does.
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}
    answered = client.responses.create(model=MODEL, input=[*question, *called.output, result], tools=[WEATHER], max_output_tokens=40)
    assert answered.output[0].type == "message" and "sunny" in answered.output_text.lower()
    # ... or only the result, after the stored call.
    continued = client.responses.create(model=MODEL, input=[result], previous_response_id=called.id, tools=[WEATHER], max_output_tokens=40)
    assert (continued.output_text, continued.usage.input_tokens) == (answered.output_text, answered.usage.input_tokens)
    assert [m["role"] for m in stored_messages(client, continued.id)] == ["user", "assistant", "tool", "assistant"]


def test_a_function_call_streams_its_arguments(client: openai.OpenAI) -> None:
    choice = {"type": "function", "name": "get_weather"}
    with client.responses.stream(model=MODEL, input="Weather in Tokyo?", tools=[WEATHER], tool_choice=choice, max_output_tokens=64) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (call,) = final.output
    assert call.name == "get_weather" and events[4].arguments == call.arguments and call.parsed_arguments == json.loads(call.arguments)


def test_a_json_schema_format_is_followed(client: openai.OpenAI) -> None:
    text = {"format": {"type": "json_schema", "name": "capital", "schema": CAPITAL_SCHEMA, "strict": True}}
    response = client.responses.create(model=MODEL, input="Name a country and its capital, as JSON.", text=text, max_output_tokens=80)
    answer = json.loads(response.output_text)
    assert set(answer) == {"capital", "country"} and all(isinstance(value, str) for value in answer.values())
    assert response.text.format.type == "json_schema" and response.text.format.name == "capital"
    parsed = client.responses.parse(model=MODEL, input="What is the capital of Italy? Reply in JSON.", text_format=Capital, max_output_tokens=80)
    assert isinstance(parsed.output_parsed, Capital)
    anything = client.responses.create(
        model=MODEL, input="Give me a JSON object with the key city.", text={"format": {"type": "json_object"}}, max_output_tokens=80
    )
    assert "city" in json.loads(anything.output_text)


def test_an_engine_refusal_mid_stream_is_error_then_failed(client: openai.OpenAI) -> None:
    bad_schema = {"format": {"type": "json_schema", "name": "broken", "schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}}
    with pytest.raises(openai.BadRequestError, match="strin"):
        client.responses.create(model=MODEL, input="Hi", text=bad_schema, max_output_tokens=8)
    events = list(client.responses.create(model=MODEL, input="Hi", text=bad_schema, max_output_tokens=8, stream=True))
    assert [event.type for event in events] == ["response.created", "response.in_progress", "error", "response.failed"]
    assert "strin" in events[2].message and events[3].response.status == "failed" and "strin" in events[3].response.error.message


BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({"input": []}, "input", "at least one input item"),
    ({"input": [{"role": "wizard", "content": "hi"}]}, "input.0.message.role", "'user', 'system', 'developer' or 'assistant'"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]}, "input", "reads text only"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input.0.message.content.0", "files and audio are not read"),
    ({"input": [{"type": "web_search_call", "status": "completed"}]}, "input.0", "function_call_output or reasoning item"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "'minimal', 'low', 'medium' or 'high'"),
    ({"input": [{"type": "function_call_output", "output": "5"}]}, "input.0.function_call_output.call_id", "Field required"),
    ({"max_output_tokens": 0}, "max_output_tokens", "greater than or equal to 1"),
    ({"input": "word " * 9000}, "input", "more (max_output_tokens), but the context window is 8192 tokens"),
    ({"temperature": 3}, "temperature", "less than or equal to 2"),
    ({"tools": [{"type": "web_search"}]}, "tools.0", "function tools only"),
    ({"tools": [{"type": "function", "name": "no spaces allowed"}]}, "tools.0.name", "pattern"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "add"}}, "tool_choice", "not one of the tools"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format", "json_schema"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.json_schema.schema", "Field required"),
    ({"metadata": {"key": "x" * 600}}, "metadata", "at most 512"),
    ({"text": {"frobnicate": 1}}, "text.frobnicate", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize("fields,param,fragment", BAD_INPUTS, ids=[case[1] + ":" + case[2] for case in BAD_INPUTS])
def test_bad_inputs_name_the_field(client: openai.OpenAI, fields: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(**{"model": MODEL, "input": "Hi", "max_output_tokens": 4, **fields})
    assert bad.value.body["param"] == param and fragment in bad.value.message
