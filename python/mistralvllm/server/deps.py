"""FastAPI dependencies of the routes: the service's state and the API-key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from .api_error import APIError
from .state import ServiceState


def service(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service  # set by create_app
    return state


Service = Annotated[ServiceState, Depends(service)]


def require_key(request: Request, state: Service) -> None:
    """401 unless the request carries ``server.api_key`` (compared in constant
    time), as ``Authorization: Bearer <key>`` or as Anthropic's ``x-api-key``."""
    expected = state.config.server.api_key
    if expected is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise APIError(401, "missing or wrong API key (send Authorization: Bearer <key>)", type="authentication_error", code="invalid_api_key")
