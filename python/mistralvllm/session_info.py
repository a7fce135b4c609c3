"""What a `Session` reports about itself, key by key: `ModelInfo` (what is
loaded and how), `EngineStats` (the engine's counters and caches), both at
once (`SessionInfo`), and `SequenceCounts` (streams running and waiting). The extension builds these
dicts (rust/src/session.rs); `_core.pyi` types its methods with them."""

from __future__ import annotations

from typing import Literal, TypedDict

from ._core import Topology


class ModelInfo(TypedDict):
    """The model and the options it was loaded with (`_core.Session.info`)."""

    model: str
    format: str
    task: Literal["chat", "embedding"]
    vision: bool
    architecture: str
    num_layers: int
    vocab_size: int | None
    max_seq_len: int | None
    device: str
    dtype: str
    isq: str | None
    topology: Topology | None
    paged_attention: bool
    block_size: int | None
    kv_mem: tuple[str, float] | None
    max_num_seqs: int
    max_running_sequences: int
    prefix_cache_n: int | None
    prefix_cache_bytes_limit: int | None
    paged_cache_type: str
    lora_adapters: list[str]
    draft_model: str | None
    draft_tokens: int | None
    chat_template: str | None
    build_features: list[str]
    closed: bool


class EngineStats(TypedDict):
    """The engine's counters since load and what its caches hold as of its
    last step (`Session.engine_stats`); the KV blocks are None without paged
    attention, the draft tokens None without a draft model."""

    sequences: int
    prefix_cache_hits: int
    prefix_cache_sequences: int
    prefix_cache_bytes: int
    kv_cache_tokens: int
    kv_cache_blocks_used: int | None
    kv_cache_blocks: int | None
    sequences_running: int
    sequences_waiting: int
    draft_tokens_proposed: int | None
    draft_tokens_accepted: int | None


class SessionInfo(ModelInfo, EngineStats):
    """What an open `Session.info` returns: `ModelInfo` with the `EngineStats`
    (a closed session has no engine counters: only `ModelInfo`)."""


class RunningSequences(TypedDict):
    """Streams sent to the engine and not yet finished or closed (`_core.Session.sequence_counts`)."""

    running: int


class SequenceCounts(RunningSequences):
    """Streams being generated, and async requests queued for a place in the
    engine (`Session.sequence_counts`)."""

    waiting: int
