"""The config's sections that say which model to load and how: ``model``,
``topology``, ``paged_attention`` and ``engine`` (the one model of a config),
or one entry of ``models`` (`ServedModelSection`) each."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .._core import ISQ_NAMES, Topology, check_device
from ..cache_options import prefix_cache_bytes
from ..errors import ConfigError
from .sections import Section


def _check_isq(value: str | None) -> str | None:
    if value is None:
        return None
    for name in ISQ_NAMES:
        if name.lower() == value.lower():
            return name
    raise ValueError(f"{value!r} is not one of {', '.join(ISQ_NAMES)}")


def _check_device(value: str | None) -> str | None:
    """``auto`` (the session picks) or a device in mistral.rs's syntax, checked by the extension."""
    if value is not None and value != "auto":
        try:
            check_device(value)
        except ConfigError as e:
            raise ValueError(f"{e}, or 'auto'") from None
    return value


class DraftSection(Section):
    """Speculative decoding: a small model with the same tokenizer proposes
    ``tokens`` tokens a step, which the model checks in one pass."""

    path: str = Field(description="The draft model: a .gguf file, a model directory or a model's name (as `path`)")
    tokens: int = Field(4, ge=1, le=32, description="Draft tokens proposed a step (mistral.rs's gamma)")


class ModelSection(Section):
    """Which model to load and how."""

    path: str | None = Field(
        None,
        description="A .gguf file or a Hugging Face model directory, or a model's name: an Ollama name (qwen2.5:0.5b) "
        "or a Hugging Face repo id (org/name, org/name:Q4_K_M); null: the bundled default model",
    )
    dtype: Literal["auto", "bf16", "f16", "f32"] = "auto"
    device: str = Field("auto", description="auto, cpu, cuda[N] or metal[N]")
    isq: str | None = Field(None, description="In-situ quantization of the whole (plain) model, e.g. Q4K")
    lora: list[str] = Field(
        default_factory=list,
        description="LoRA adapter directories (PEFT's adapter_config.json + adapter_model.safetensors) merged into a plain model",
    )

    draft: DraftSection | None = Field(None, description="A draft model for speculative decoding")

    _isq = field_validator("isq")(_check_isq)
    _device = field_validator("device")(_check_device)


class TopologyRangeSection(Section):
    """One layer range of the per-layer topology, written as in mistral.rs's
    topology files (the extension's `Topology` reads it)."""

    layers: str = Field(description="'START-END' (end exclusive), e.g. '0-8', or one layer 'N'")
    isq: str | None = None
    device: str | None = None

    _isq = field_validator("isq")(_check_isq)
    _device = field_validator("device")(_check_device)

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: str) -> str:
        try:
            ranges = Topology.from_dict({value: {}}).ranges
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if not ranges:
            raise ValueError(f"{value!r} is a tensor pattern; the config's topology takes layer ranges ('START-END' or 'N')")
        return ranges[0].selector

    @property
    def bounds(self) -> tuple[int, int]:
        start, end = self.layers.split("-")
        return int(start), int(end)


class PagedAttentionSection(Section):
    """PagedAttention (CUDA/Metal): mode, block size and KV-cache memory."""

    mode: Literal["auto", "on", "off"] = "auto"
    block_size: Literal[8, 16, 32] | None = None
    gpu_mem: int | None = Field(None, gt=0, description="KV-cache memory in MB")
    gpu_mem_usage: float | None = Field(None, gt=0, le=1, description="KV-cache memory as a fraction of GPU memory")
    context_len: int | None = Field(None, gt=0, description="KV-cache memory sized for this many tokens")
    cache_type: Literal["auto", "f8e4m3"] = Field("auto", description="KV-cache dtype: auto (the model's) or f8e4m3 (CUDA)")

    @model_validator(mode="after")
    def _one_memory_setting(self) -> PagedAttentionSection:
        given = [n for n in ("gpu_mem", "gpu_mem_usage", "context_len") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of gpu_mem, gpu_mem_usage, context_len (got {', '.join(given)})")
        return self

    def kv_mem(self) -> int | float | str | None:
        """The memory setting in `Session`'s `kv_mem` form."""
        if self.gpu_mem is not None:
            return self.gpu_mem
        if self.gpu_mem_usage is not None:
            return float(self.gpu_mem_usage)
        if self.context_len is not None:
            return f"{self.context_len} tokens"
        return None


class TensorParallelSection(Section):
    """mistral.rs's tensor parallelism (see mistralvllm.tensor_parallel)."""

    backend: Literal["auto", "off", "nccl", "ring"] = Field(
        "auto", description="auto: mistral.rs's choice (NCCL over every GPU when built with nccl); off; nccl; ring"
    )
    ring_config: str | None = Field(None, description="ring: this node's JSON file (rank, world_size, master/neighbour addresses)")


class EngineSection(Section):
    tensor_parallel: TensorParallelSection = TensorParallelSection()
    max_num_seqs: int = Field(32, ge=1, description="Sequences the engine runs at once")
    prefix_cache: int | None = Field(
        None,
        ge=0,
        description="Finished sequences whose KV caches are kept for prompts that start the same way "
        "(oldest evicted first); 0 turns it off; null: 16",
    )
    prefix_cache_mem: int | str | None = Field(
        None,
        description="KV data the prefix cache may hold: MiB as an int, or '512MiB'/'1GiB'; null: 256 MiB (~22.5 KiB a token with the default model)",
    )

    @field_validator("prefix_cache_mem")
    @classmethod
    def _check_prefix_cache_mem(cls, value: int | str | None) -> int | str | None:
        try:
            prefix_cache_bytes(value)
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("prefix_cache_mem: ")) from None
        return value


def build_topology(ranges: list[TopologyRangeSection]) -> Topology | None:
    """A `topology` list as a `Topology` (None when empty)."""
    if not ranges:
        return None
    topology = Topology()
    for index, entry in enumerate(ranges):
        try:
            topology = topology.with_range(*entry.bounds, isq=entry.isq, device=entry.device)
        except ConfigError as e:
            raise ValueError(f"topology[{index}]: {e}") from None
    return topology


class ServedModelSection(ModelSection):
    """One entry of `models`: the name clients send, other names it answers
    to, and the options the `model`, `topology`, `paged_attention` and
    `engine` sections give a single model."""

    name: str = Field(min_length=1, description="The model id clients send (OpenAI's and Ollama's `model`)")
    aliases: list[str] = Field(default_factory=list, description="Other names this model answers to")
    topology: list[TopologyRangeSection] = Field(default_factory=list)
    paged_attention: PagedAttentionSection = PagedAttentionSection()
    engine: EngineSection = EngineSection()

    @model_validator(mode="after")
    def _topology_is_consistent(self) -> ServedModelSection:
        build_topology(self.topology)
        return self

    @property
    def names(self) -> list[str]:
        return [self.name, *self.aliases]

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for `Session`."""
        return {
            "model": self.path,
            "topology": build_topology(self.topology),
            "isq": self.isq,
            "device": self.device,
            "dtype": self.dtype,
            "paged_attention": self.paged_attention.mode,
            "block_size": self.paged_attention.block_size,
            "kv_mem": self.paged_attention.kv_mem(),
            "paged_cache_type": self.paged_attention.cache_type,
            "lora": self.lora,
            "draft_model": self.draft.path if self.draft else None,
            "draft_tokens": self.draft.tokens if self.draft else 4,
            "max_num_seqs": self.engine.max_num_seqs,
            "prefix_cache": self.engine.prefix_cache,
            "prefix_cache_mem": self.engine.prefix_cache_mem,
            "tensor_parallel": self.engine.tensor_parallel.backend,
            "ring_config": self.engine.tensor_parallel.ring_config,
        }
