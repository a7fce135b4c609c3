"""Types of the native extension (rust/src); kept identical to what it exports."""

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any, final

from .session_info import EngineStats, ModelInfo, RunningSequences

MISTRALRS_VERSION: str
ISQ_NAMES: list[str]
BUILD_FEATURES: list[str]

def inspect_model(path: str | PathLike[str]) -> dict[str, Any]: ...

class MistralVllmError(Exception): ...
class ModelLoadError(MistralVllmError): ...
class ConfigError(MistralVllmError): ...
class RequestError(MistralVllmError): ...

class ContextOverflowError(RequestError):
    # All three are set when mistralvllm refuses the prompt before sending it
    # (context_window.context_overflow); prompt_tokens and context_length
    # when the engine refuses a prompt longer than the window.
    prompt_tokens: int
    max_tokens: int
    context_length: int

@final
class TopologyRange:
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def isq(self) -> str | None: ...
    @property
    def device(self) -> str | None: ...

@final
class Topology:
    def __init__(self) -> None: ...
    def with_range(self, start: int, end: int, isq: str | None = None, device: str | None = None) -> Topology: ...
    def with_pattern(self, regex: str, isq: str | None = None, device: str | None = None) -> Topology: ...
    @staticmethod
    def from_file(path: str | PathLike[str]) -> Topology: ...
    @staticmethod
    def from_dict(mapping: Mapping[str, Mapping[str, str | None]]) -> Topology: ...
    def to_dict(self) -> dict[str, dict[str, str | None]]: ...
    @property
    def ranges(self) -> list[TopologyRange]: ...
    def __len__(self) -> int: ...

@final
class Usage:
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def total_tokens(self) -> int: ...
    @property
    def time_to_first_token_s(self) -> float: ...
    @property
    def prompt_time_s(self) -> float: ...
    @property
    def prompt_tok_per_s(self) -> float: ...
    @property
    def decode_tok_per_s(self) -> float: ...
    @property
    def total_time_s(self) -> float: ...
    @property
    def cached_prompt_tokens(self) -> int:
        """Prompt tokens whose KV cache came from the prefix cache."""

@final
class ToolCall:
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> str: ...

@final
class TopTokenLogprob:
    @property
    def token_id(self) -> int: ...
    @property
    def token(self) -> str: ...
    @property
    def logprob(self) -> float: ...

@final
class TokenLogprob:
    @property
    def token(self) -> str: ...
    @property
    def logprob(self) -> float: ...
    @property
    def top_logprobs(self) -> list[TopTokenLogprob]: ...

@final
class ChatChunk:
    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def usage(self) -> Usage | None: ...
    @property
    def tool_calls(self) -> list[ToolCall]: ...
    @property
    def stop_sequence(self) -> str | None: ...
    @property
    def logprobs(self) -> list[TokenLogprob]: ...

@final
class ChatStream:
    def __iter__(self) -> ChatStream: ...
    def __next__(self) -> ChatChunk: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

@final
class Session:
    def __init__(
        self,
        model: str | PathLike[str],
        *,
        topology: Topology | None = None,
        isq: str | None = None,
        device: str = "auto",
        paged_attention: str = "auto",
        block_size: int | None = None,
        kv_mem: tuple[str, float] | None = None,
        max_num_seqs: int = 32,
        prefix_cache_n: int | None = 16,
        prefix_cache_bytes: int | None = None,
        dtype: str = "auto",
        paged_cache_type: str = "auto",
        write_uqff: str | PathLike[str] | None = None,
        lora_adapters: list[str] = ...,
    ) -> None: ...
    def stream(
        self,
        messages: list[Mapping[str, str]] | None = None,
        *,
        prompt: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repetition_penalty: float | None = None,
        json_schema: str | None = None,
        regex: str | None = None,
        grammar: str | None = None,
        tools: str | None = None,
        tool_choice: str | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        logit_bias: Mapping[int, float] | None = None,
    ) -> ChatStream: ...
    def score(self, tokens: list[int]) -> list[float]: ...
    def score_distributions(self, tokens: list[int]) -> list[bytes]: ...
    def engine_stats(self) -> EngineStats: ...
    def tokenize(
        self,
        messages: list[Mapping[str, str]] | None = None,
        *,
        prompt: str | None = None,
        add_generation_prompt: bool = True,
        add_special_tokens: bool | None = None,
    ) -> list[int]: ...
    def detokenize(self, tokens: list[int], *, skip_special_tokens: bool = False) -> str: ...
    def info(self) -> ModelInfo: ...
    def sequence_counts(self) -> RunningSequences: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
