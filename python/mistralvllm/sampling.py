"""Checks of a request's sampling options before it reaches the engine, and
the options of each of its ``n`` answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import RequestError
from .sampling_bounds import MAX_LOGIT_BIAS, MAX_TOP_LOGPROBS, SEED_MAX

# Sampling options the engine takes as unsigned integers, and their least value.
_COUNTS = {"max_tokens": 1, "top_k": 0, "seed": 0}


def _check_counts(sampling: Mapping[str, Any]) -> None:
    """Refuse counts the engine cannot take, naming the option."""
    for name, least in _COUNTS.items():
        value = sampling.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, int):
            continue
        if not least <= value <= SEED_MAX:
            raise RequestError(f"{name}: {value} is out of range; expected a whole number from {least} to 2**64-1")


def _check_logprob_options(sampling: Mapping[str, Any]) -> None:
    """Refuse ``top_logprobs`` and ``logit_bias`` outside OpenAI's bounds."""
    top = sampling.get("top_logprobs")
    if top is not None and not (isinstance(top, int) and 0 <= top <= MAX_TOP_LOGPROBS):
        raise RequestError(f"top_logprobs: {top!r} is out of range; expected a whole number from 0 to {MAX_TOP_LOGPROBS}")
    for token, bias in (sampling.get("logit_bias") or {}).items():
        if not (isinstance(token, int) and 0 <= token < 2**32):
            raise RequestError(f"logit_bias: key {token!r} is not a token id")
        if not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
            raise RequestError(f"logit_bias: {bias} for token {token} is out of range; expected -{MAX_LOGIT_BIAS} to {MAX_LOGIT_BIAS}")


def check_sampling(request: Mapping[str, Any]) -> None:
    """Refuse sampling options the engine cannot take, naming the option."""
    _check_counts(request)
    _check_logprob_options(request)


def choice_options(sampling: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """The options of each of ``n`` answers to one prompt: a seeded request's
    choice i draws with seed + i, so the answers differ and still repeat."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RequestError(f"n: {n!r} is not valid; expected a whole number of answers, at least 1")
    seed = sampling.get("seed")
    return [{**sampling, "seed": None if seed is None else (seed + i) % 2**64} for i in range(n)]
