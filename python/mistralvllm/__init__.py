"""mistralvllm: chat with local models on the mistral.rs engine, with paged
attention, per-layer in-situ quantization (a Topology), continuous batching
and streaming."""

from ._core import BUILD_FEATURES, ISQ_NAMES, MISTRALRS_VERSION, ChatChunk, Topology, TopologyRange, Usage
from .errors import ConfigError, ContextOverflowError, MistralVllmError, ModelLoadError, RequestError
from .models import default_model_path
from .session import ChatResult, Session

__version__ = "0.1.0"

__all__ = [
    "BUILD_FEATURES",
    "ISQ_NAMES",
    "MISTRALRS_VERSION",
    "ChatChunk",
    "ChatResult",
    "ConfigError",
    "ContextOverflowError",
    "MistralVllmError",
    "ModelLoadError",
    "RequestError",
    "Session",
    "Topology",
    "TopologyRange",
    "Usage",
    "default_model_path",
]
