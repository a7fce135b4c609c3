"""The OpenAI-compatible chat service (FastAPI + uvicorn) and its web page."""

from .app import create_app

__all__ = ["create_app"]
