"""The bounds of each sampling option, as Annotated pydantic types that
`SamplingParams`, the config's ``sampling`` section and every API's request
bodies share (``temperature: Temperature | None = None``).

One rule, one type: where an API deliberately differs from the others
(OpenAI caps temperature at 2, Anthropic at 1, the config allows the
engine's whole range; Ollama's seed -1 means a random one), that difference
is a type of its own, named for it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# The engine takes its counts and seeds as unsigned 64-bit numbers.
U64_MAX = 2**64 - 1

# Tokens an answer may have at most (max_tokens, max_completion_tokens,
# max_output_tokens); Ollama's num_predict has its own no-limit values.
MaxTokens = Annotated[int, Field(ge=1, le=U64_MAX)]

# OpenAI's temperature range, which its Responses API and Ollama share.
Temperature = Annotated[float, Field(ge=0, le=2)]
# Anthropic's Messages API caps temperature at 1.
AnthropicTemperature = Annotated[float, Field(ge=0, le=1)]
# What the engine takes (`SamplingParams`, the config's defaults): more than any API lets a request ask.
EngineTemperature = Annotated[float, Field(ge=0, le=100)]

# A probability: top_p and min_p.
Probability = Annotated[float, Field(ge=0, le=1)]
TopP = Probability
MinP = Probability
TopK = Annotated[int, Field(ge=1, le=U64_MAX)]

Seed = Annotated[int, Field(ge=0, le=U64_MAX)]
# Ollama's seed may be -1: a random seed, as when left out.
OllamaSeed = Annotated[int, Field(ge=-1, le=U64_MAX)]

# frequency_penalty and presence_penalty, in OpenAI's range (Ollama's too); the
# config's defaults are not bounded (the engine takes any).
Penalty = Annotated[float, Field(ge=-2, le=2)]
RepetitionPenalty = Annotated[float, Field(gt=0)]

# OpenAI's limit on stop sequences (Ollama's too); Anthropic's API and the config have none.
MAX_STOP_SEQUENCES = 4

# Alternatives per token a request may ask to see with its log probabilities
# (OpenAI's limit), and the bound of a logit bias either way.
MAX_TOP_LOGPROBS = 20
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)]
MAX_LOGIT_BIAS = 100
LogitBias = Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]
# A token id, as the engine takes it (an unsigned 32-bit number).
TokenId = Annotated[int, Field(ge=0, lt=2**32)]
