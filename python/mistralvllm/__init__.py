"""mistralvllm: chat with local models on the mistral.rs engine, with paged
attention, per-layer in-situ quantization (a Topology), continuous batching
and streaming."""

from . import cpu_builds

try:
    # The extension build for this CPU (cpu_builds): "base", or a level such as "x86-64-v4".
    CPU_BUILD = cpu_builds.load(__name__)
    from ._core import BUILD_FEATURES, ISQ_NAMES, MISTRALRS_VERSION, ChatChunk, ToolCall, Topology, TopologyRange, Usage
except ImportError as e:  # a CUDA build whose runtime libraries are not installed
    if "libcuda.so" in str(e):
        raise ImportError(f"{e}. This mistralvllm was built with CUDA and needs the NVIDIA driver (libcuda.so.1)") from e
    if any(name in str(e) for name in ("libcu", "libnvrtc", "libcudnn")):
        raise ImportError(
            f"{e}. This mistralvllm was built with CUDA 13: install its runtime libraries with "
            "`pip install mistralvllm[cuda]`, or make the system's CUDA 13 libraries visible to the loader"
        ) from e
    raise

from importlib.metadata import version

from .collect import ChatResult
from .embeddings import Embedding
from .errors import ConfigError, ContextOverflowError, MistralVllmError, ModelLoadError, RequestError
from .models import default_model_path
from .sampling import SamplingOptions, SamplingParams
from .session import Session
from .session_info import EngineStats, ModelInfo, SequenceCounts, SessionInfo

__version__ = version("mistralvllm")

__all__ = [
    "BUILD_FEATURES",
    "CPU_BUILD",
    "ISQ_NAMES",
    "MISTRALRS_VERSION",
    "ChatChunk",
    "ChatResult",
    "ConfigError",
    "ContextOverflowError",
    "Embedding",
    "EngineStats",
    "MistralVllmError",
    "ModelInfo",
    "ModelLoadError",
    "RequestError",
    "SamplingOptions",
    "SamplingParams",
    "SequenceCounts",
    "Session",
    "SessionInfo",
    "ToolCall",
    "Topology",
    "TopologyRange",
    "Usage",
    "default_model_path",
]
