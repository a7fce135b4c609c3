"""The exception hierarchy. The classes are created in the Rust core, so an
error raised by the engine and one raised here are the same type."""

from ._core import (
    ConfigError,
    ContextOverflowError,
    MistralVllmError,
    ModelLoadError,
    RequestError,
)

__all__ = [
    "ConfigError",
    "ContextOverflowError",
    "MistralVllmError",
    "ModelLoadError",
    "RequestError",
]
