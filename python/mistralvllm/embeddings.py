"""Embeddings as `Session.embed` returns them, and the forms the APIs send
them in (a list of floats, or OpenAI's base64 of little-endian float32)."""

from __future__ import annotations

import base64
import math
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from .errors import RequestError

EmbeddingInputs = str | Sequence[str] | Sequence[Sequence[int]]


@dataclass(frozen=True)
class Embedding:
    """One input's embedding: its vector (unit length where the model's
    modules.json ends in a Normalize layer) and the tokens the model read."""

    vector: tuple[float, ...]
    prompt_tokens: int

    @classmethod
    def from_engine(cls, raw: bytes, prompt_tokens: int) -> Embedding:
        """The engine's answer: the vector as little-endian f32 bytes."""
        values = array("f", raw)
        if sys.byteorder == "big":
            values.byteswap()
        return cls(tuple(values), prompt_tokens)

    @property
    def dimensions(self) -> int:
        return len(self.vector)

    def shortened(self, dimensions: int) -> Embedding:
        """The first ``dimensions`` components scaled back to unit length, as
        OpenAI's and Ollama's ``dimensions`` do (meant for models trained
        Matryoshka-style, whose leading components carry the meaning)."""
        if not 1 <= dimensions <= self.dimensions:
            raise RequestError(f"dimensions: {dimensions} is not between 1 and the model's {self.dimensions}")
        head = self.vector[:dimensions]
        norm = math.sqrt(math.fsum(v * v for v in head)) or 1.0
        return Embedding(tuple(v / norm for v in head), self.prompt_tokens)

    def base64(self) -> str:
        """The vector as OpenAI's ``encoding_format: "base64"`` sends it."""
        return base64.b64encode(struct.pack(f"<{self.dimensions}f", *self.vector)).decode("ascii")


def engine_inputs(inputs: EmbeddingInputs) -> list[str] | list[list[int]]:
    """``inputs`` as the engine takes them: a list of texts or of token-id
    lists (one text alone is a list of one); a `RequestError` names what is wrong."""
    if isinstance(inputs, str):
        return [inputs]
    items = list(inputs)
    if not items:
        raise RequestError("input: expected at least one text or list of token ids")
    if all(isinstance(item, str) for item in items):
        return [str(item) for item in items]
    tokens: list[list[int]] = []
    for index, item in enumerate(items):
        ids: list[object] = [] if isinstance(item, str) else list(item)
        if isinstance(item, str) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
            raise RequestError(f"input[{index}]: expected texts only or token-id lists only (non-negative integers)")
        tokens.append(cast(list[int], ids))
    return tokens
