"""The configuration file (`config/config.json`), validated with pydantic.

Precedence, lowest first: defaults < config file < environment
(``MISTRALVLLM_<SECTION>__<FIELD>``, e.g. ``MISTRALVLLM_SAMPLING__TEMPERATURE=0.7``)
< command-line flags. Every error names where the bad value came from (the
file or the environment variable), the field path and what was expected.
"""

from __future__ import annotations

from .loading import ENV_PREFIX, config_schema, load_config, read_config_file
from .model_sections import (
    EngineSection,
    ModelSection,
    PagedAttentionSection,
    ServedModelSection,
    TensorParallelSection,
    TopologyRangeSection,
    build_topology,
)
from .sections import DURATION, HistorySection, SamplingSection, Section, ServerSection, keep_alive_seconds
from .settings import SINGLE_MODEL_SECTIONS, Config

__all__ = [
    "DURATION",
    "ENV_PREFIX",
    "SINGLE_MODEL_SECTIONS",
    "Config",
    "EngineSection",
    "HistorySection",
    "ModelSection",
    "PagedAttentionSection",
    "SamplingSection",
    "Section",
    "ServedModelSection",
    "ServerSection",
    "TensorParallelSection",
    "TopologyRangeSection",
    "build_topology",
    "config_schema",
    "keep_alive_seconds",
    "load_config",
    "read_config_file",
]
