"""The base of every API's request bodies: `Strict` parts that refuse fields
they do not know, and whole bodies (`RequestBody`) that ignore and log them."""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, model_validator


class Strict(BaseModel):
    """A request body (or part of one) that refuses fields it does not know;
    every API's request models build on it."""

    model_config = ConfigDict(extra="forbid")


log = logging.getLogger("mistralvllm.server")


class RequestBody(Strict):
    """A whole request body. Client libraries add top-level fields of their own
    or of newer API versions, so, as vLLM does, fields it does not know are
    ignored and logged (once for each body type and set of fields); its parts
    still refuse theirs, and a known field of the wrong type or range is a 400."""

    model_config = ConfigDict(extra="ignore")
    _ignored_fields_logged: ClassVar[set[tuple[str, frozenset[str]]]] = set()

    @model_validator(mode="wrap")
    @classmethod
    def _log_ignored_fields(cls, data: Any, handler: ModelWrapValidatorHandler[RequestBody]) -> RequestBody:
        body = handler(data)
        if isinstance(data, dict):
            ignored = frozenset(str(key) for key in data if key not in _field_names(cls))
            if ignored and (cls.__name__, ignored) not in RequestBody._ignored_fields_logged:
                RequestBody._ignored_fields_logged.add((cls.__name__, ignored))
                log.warning("%s: ignored the request fields this service does not know: %s", cls.__name__, ", ".join(sorted(ignored)))
        return body


@functools.cache
def _field_names(body: type[RequestBody]) -> frozenset[str]:
    """The names (and aliases) a body type's fields are sent under."""
    return frozenset(name for field_name, field in body.model_fields.items() for name in (field_name, field.alias) if name)
