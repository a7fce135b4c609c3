"""`SamplingParams`: how the engine writes one answer, checked once.

Every way into the engine builds one: each API's request model
(``sampling()``), the config's ``sampling`` defaults, the chat's ``/set``
and ``--json-schema``, and Python callers. The Rust core reads it by its
attribute names and checks nothing again. Each bound is a type of
`sampling_bounds`; an API whose own bounds are narrower (OpenAI's
temperature up to 2) checks them in its request model first.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, ValidationError, field_validator, model_validator

from .errors import RequestError
from .sampling_bounds import (
    U64_MAX,
    EngineTemperature,
    LogitBias,
    MaxTokens,
    MinP,
    RepetitionPenalty,
    Seed,
    TokenId,
    TopK,
    TopLogprobs,
    TopP,
)


class SamplingOptions(BaseModel):
    """The options a default may set for every answer (the config's
    ``sampling`` section): length, randomness, stops and penalties, and
    whether a thinking model thinks (``think``: its chat template's
    ``enable_thinking``; ``reasoning_effort``: low, medium or high, for
    templates that read it). Unset (None): the engine's or the template's
    default; temperature 0 or unset is greedy."""

    max_tokens: MaxTokens | None = None
    temperature: EngineTemperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    seed: Seed | None = None
    stop: list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: RepetitionPenalty | None = None
    # A thinking model's template: enable_thinking (unset: its default) and reasoning_effort.
    think: bool | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None


class SamplingParams(SamplingOptions):
    """How the engine writes one answer: the `SamplingOptions`, plus what
    one request may ask for itself.

    - ``logprobs``: each chunk carries the natural-log probability of its
      tokens under the model (before temperature and truncation), and of the
      ``top_logprobs`` (0-20) most likely tokens at each position.
    - ``logit_bias``: {token id: -100..100}, added to the logits before sampling.
    - At most one constraint: ``json_schema`` (a dict, or its JSON text): the
      answer is JSON that validates against it; ``regex``: the answer matches
      the regular expression; ``grammar``: the answer is a sentence of the
      Lark grammar (rule ``start``).

    A value out of bounds raises `RequestError` naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    logit_bias: dict[TokenId, LogitBias] | None = None
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    grammar: str | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _as_request_error(cls, data: Any, handler: ModelWrapValidatorHandler[SamplingParams]) -> SamplingParams:
        try:
            params = handler(data)
        except ValidationError as e:
            raise RequestError("; ".join(_described(error) for error in e.errors())) from None
        if params.top_logprobs is not None and not params.logprobs:
            raise RequestError("top_logprobs: needs logprobs=True")
        if sum(value is not None for value in (params.json_schema, params.regex, params.grammar)) > 1:
            raise RequestError("give at most one of json_schema, regex and grammar")
        return params

    @field_validator("json_schema", mode="before")
    @classmethod
    def _schema_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON ({e})") from None

    @property
    def json_schema_text(self) -> str | None:
        """``json_schema`` as JSON text, as the engine takes it."""
        return None if self.json_schema is None else json.dumps(self.json_schema)

    @property
    def constrained(self) -> bool:
        """The answer is held to a schema, regex or grammar."""
        return any(value is not None for value in (self.json_schema, self.regex, self.grammar))

    def over(self, defaults: SamplingOptions) -> SamplingParams:
        """These params, with ``defaults`` in every field they leave unset."""
        return SamplingParams.model_validate({**defaults.model_dump(exclude_none=True), **self.model_dump(exclude_unset=True)})

    def replace(self, **fields: Any) -> SamplingParams:
        """A copy with ``fields`` changed, checked again."""
        return SamplingParams.model_validate({**self.model_dump(exclude_unset=True), **fields})

    def choices(self, n: int) -> list[SamplingParams]:
        """The params of each of ``n`` answers to one prompt: a seeded
        request's choice i draws with seed + i, so the answers differ and
        still repeat."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RequestError(f"n: {n!r} is not valid; expected a whole number of answers, at least 1")
        if self.seed is None:
            return [self] * n
        return [self.replace(seed=(self.seed + i) % (U64_MAX + 1)) for i in range(n)]


def _described(error: Any) -> str:
    """One pydantic error as ``field: what is wrong``."""
    field = ".".join(str(part) for part in error["loc"])
    if error["type"] == "value_error":
        return f"{field}: {str(error['msg']).removeprefix('Value error, ')}"
    return f"{field}: {error['msg']} (got {error['input']!r})"
