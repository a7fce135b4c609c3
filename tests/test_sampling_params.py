"""`SamplingParams`: one typed value that every way into the engine builds
(the Python API, each API's request model, the config's defaults, the chat)."""

from __future__ import annotations

import inspect
import json

import pytest

from mistralvllm import RequestError, SamplingOptions, SamplingParams, Session
from mistralvllm.config import load_config
from mistralvllm.server.anthropic.requests import MessagesRequest
from mistralvllm.server.ollama.requests import ChatRequest as OllamaChatRequest
from mistralvllm.server.openai.requests import ChatCompletionRequest, CompletionRequest
from mistralvllm.server.responses.requests import ResponseRequest

QUESTION = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


def test_defaults_fill_only_what_a_request_leaves_unset() -> None:
    defaults = SamplingOptions(max_tokens=512, temperature=0.7, stop=["END"])
    params = SamplingParams(temperature=0.0, seed=3).over(defaults)
    assert (params.max_tokens, params.temperature, params.seed, params.stop) == (512, 0.0, 3, ["END"])
    assert SamplingParams().over(SamplingOptions()) == SamplingParams()


def test_choices_draw_with_consecutive_seeds() -> None:
    seeded = SamplingParams(temperature=1.0, seed=2**64 - 1).choices(3)
    assert [params.seed for params in seeded] == [2**64 - 1, 0, 1]
    assert {params.temperature for params in seeded} == {1.0}
    assert SamplingParams(max_tokens=4).choices(2) == [SamplingParams(max_tokens=4)] * 2
    with pytest.raises(RequestError, match="n: 0 is not valid"):
        SamplingParams().choices(0)


def test_a_schema_is_held_as_a_dict_and_sent_as_json_text() -> None:
    from_text = SamplingParams(json_schema=json.dumps(SCHEMA))
    assert from_text.json_schema == SCHEMA == json.loads(from_text.json_schema_text or "")
    assert from_text.constrained and not SamplingParams().constrained
    assert SamplingParams().json_schema_text is None


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"temperature": 101}, "temperature: Input should be less than or equal to 100 (got 101)"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 2**64}, "seed: Input should be less than or equal to"),
        ({"logit_bias": {2**32: 1.0}}, "logit_bias.4294967296"),
        ({"top_logprobs": 3}, "top_logprobs: needs logprobs=True"),
        ({"regex": "a", "json_schema": SCHEMA}, "give at most one of json_schema, regex and grammar"),
        ({"temprature": 0.5}, "temprature: Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_is_a_request_error_naming_the_field(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(RequestError) as raised:
        SamplingParams(**fields)
    assert fragment in str(raised.value)
    with pytest.raises(RequestError, match="max_tokens"):
        SamplingParams(seed=1).replace(max_tokens=0)


def test_every_api_builds_the_same_params() -> None:
    openai = ChatCompletionRequest(
        model="m", messages=QUESTION, max_completion_tokens=9, temperature=0.5, seed=4, stop="x", logprobs=True, top_logprobs=2
    )
    expected = SamplingParams(max_tokens=9, temperature=0.5, seed=4, stop=["x"], logprobs=True, top_logprobs=2)
    assert openai.sampling() == expected
    ollama = OllamaChatRequest(model="m", messages=QUESTION, options={"num_predict": 9, "temperature": 0.5, "seed": 4, "stop": ["x"]})
    assert ollama.openai_request("m").sampling() == SamplingParams(max_tokens=9, temperature=0.5, seed=4, stop=["x"])
    anthropic = MessagesRequest(model="m", messages=QUESTION, max_tokens=9, temperature=0.5, stop_sequences=["x"])
    assert anthropic.chat_request().sampling() == SamplingParams(max_tokens=9, temperature=0.5, stop=["x"])
    responses = ResponseRequest(model="m", input="hi", max_output_tokens=9, temperature=0.5)
    assert responses.sampling() == SamplingParams(max_tokens=9, temperature=0.5)
    completion = CompletionRequest(model="m", prompt="hi", max_tokens=9, logprobs=3)
    assert completion.sampling() == SamplingParams(max_tokens=9, logprobs=True, top_logprobs=3)


def test_the_config_section_is_the_defaults_type(tmp_path) -> None:
    config = load_config(environ={"MISTRALVLLM_SAMPLING__TEMPERATURE": "0.3", "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h")})
    assert isinstance(config.sampling, SamplingOptions)
    assert SamplingParams(max_tokens=5).over(config.sampling) == SamplingParams(max_tokens=5, temperature=0.3)


def test_no_public_session_method_takes_untyped_options() -> None:
    for name, method in inspect.getmembers(Session, inspect.isfunction):
        if name.startswith("_"):
            continue
        for parameter in inspect.signature(method).parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                assert parameter.annotation in ("Unpack[ToolOptions]", "P.kwargs"), (name, parameter)
