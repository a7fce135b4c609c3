"""`Session`: load a model, chat, stream, and report usage.

The engine batches every request it has (continuous batching), so one
`Session` serves many threads or asyncio tasks at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from typing_extensions import Unpack

from . import _core
from . import tools as tool_calling
from ._core import ChatChunk, Topology
from .adapters import lora_adapter_id
from .allocator import give_back_free_heap, share_one_heap_across_threads
from .cache_options import KvMem, parse_kv_mem, prefix_cache_bytes, prefix_cache_count
from .collect import ChatResult, collect
from .context_window import context_overflow
from .embeddings import Embedding, EmbeddingInputs, engine_inputs
from .errors import ConfigError, RequestError
from .images import has_images, resolve_images
from .models import resolve_model
from .sampling import SamplingParams
from .session_info import EngineStats, ModelInfo, SequenceCounts, SessionInfo
from .tensor_parallel import Backend, apply_tensor_parallel
from .tools import ToolOptions

# A message: role and content (a string, or a list of text and image parts,
# see `images`), and an assistant's tool_calls.
Message = Mapping[str, Any]
P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["Session"]


class Waiter(Protocol):
    """Awaits ``awaitable`` for `Session.achunks`, or gives up on it (then
    raising) and hands its later result to ``on_abandon``."""

    async def __call__(self, awaitable: Awaitable[T], *, on_abandon: Callable[[T], Any] | None = None) -> T: ...


async def _wait_plainly(awaitable: Awaitable[T], *, on_abandon: Callable[[T], Any] | None = None) -> T:
    return await awaitable


class Session:
    """A chat or embedding model loaded into the mistral.rs engine.

    ``model`` is a ``.gguf`` file (tokenizer and chat template are read from
    it) or a Hugging Face model directory (config.json, *.safetensors,
    tokenizer.json; with sentence-transformers' modules.json, an embedding
    model for :meth:`embed`); ``None`` loads the bundled default model.
    ``topology``/``isq`` quantize a plain model in situ; ``paged_attention``
    is ``"auto"`` (on where the engine supports it: CUDA/Metal), ``"on"`` or
    ``"off"``, with ``block_size``, ``kv_mem`` (see :func:`parse_kv_mem`) and
    ``paged_cache_type`` (``"auto"``: the model's dtype, or ``"f8e4m3"``).
    ``lora`` lists LoRA adapter directories (PEFT's adapter_config.json and
    adapter_model.safetensors) merged into a plain model at load.
    ``prefix_cache`` finished sequences (default 16; 0: off) keep their KV
    caches for prompts that start the same way, within ``prefix_cache_mem``
    (see :func:`prefix_cache_bytes`); the oldest go first.
    ``tensor_parallel`` splits every layer over devices with mistral.rs's
    ``nccl`` (one machine's GPUs) or ``ring`` backend (nodes joined in a TCP
    ring, each described by its ``ring_config`` file); ``auto`` leaves it to
    mistral.rs and ``off`` keeps one device (see `mistralvllm.tensor_parallel`).
    ``draft_model`` (a model with the same tokenizer, much smaller) turns on
    speculative decoding: it proposes ``draft_tokens`` tokens a step, which
    the model checks in one pass, keeping those it would have written itself
    (greedy answers are the same); `engine_stats` counts them.
    ``write_uqff`` (a ``.uqff`` path) saves the ISQ-quantized weights as a
    UQFF model directory, which loads later without quantizing again.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        topology: Topology | None = None,
        isq: str | None = None,
        device: str = "auto",
        paged_attention: Literal["auto", "on", "off"] = "auto",
        block_size: int | None = None,
        kv_mem: KvMem | None = None,
        max_num_seqs: int = 32,
        prefix_cache: int | None = None,
        prefix_cache_mem: int | str | None = None,
        dtype: Literal["auto", "bf16", "f16", "f32"] = "auto",
        paged_cache_type: Literal["auto", "f8e4m3"] = "auto",
        lora: Sequence[str | os.PathLike[str]] = (),
        draft_model: str | os.PathLike[str] | None = None,
        draft_tokens: int = 4,
        write_uqff: str | os.PathLike[str] | None = None,
        tensor_parallel: Backend = "auto",
        ring_config: str | os.PathLike[str] | None = None,
    ) -> None:
        share_one_heap_across_threads()
        path = resolve_model(model)
        apply_tensor_parallel(tensor_parallel, ring_config)
        prefix_cache = prefix_cache_count(prefix_cache)
        prefix_cache_limit = prefix_cache_bytes(prefix_cache_mem)
        try:
            uqff_path = None if write_uqff is None else str(Path(write_uqff).expanduser())
        except RuntimeError:
            raise ConfigError(f"write_uqff: {write_uqff}: starts with ~ but names no known user") from None
        self._engine = _core.Session(
            str(path),
            topology=topology,
            isq=isq,
            device=device,
            paged_attention=paged_attention,
            block_size=block_size,
            kv_mem=None if kv_mem is None else parse_kv_mem(kv_mem),
            max_num_seqs=max_num_seqs,
            prefix_cache_n=prefix_cache or None,
            prefix_cache_bytes=prefix_cache_limit if prefix_cache else None,
            dtype=dtype,
            paged_cache_type=paged_cache_type,
            write_uqff=uqff_path,
            lora_adapters=[lora_adapter_id(Path(adapter)) for adapter in lora],
            draft_model=None if draft_model is None else str(resolve_model(draft_model)),
            draft_tokens=draft_tokens,
        )
        give_back_free_heap()
        self._info = self._engine.info()
        self.context_length: int | None = self._info["max_seq_len"]
        # "chat", or "embedding" for a sentence-transformers directory.
        self.task: Literal["chat", "embedding"] = self._info["task"]
        # Async callers wait for chunks on these threads (with the GIL
        # released), one per running sequence, so they never starve each other
        # or the event loop's default executor.
        self._waiters = ThreadPoolExecutor(max_workers=max_num_seqs + 2, thread_name_prefix="mistralvllm-wait")
        # Async callers queue for the engine on their event loop, so a long
        # line of waiting requests holds no thread (see `admission`).
        self._admission: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
        self._queued = 0

    async def admission(self) -> asyncio.Semaphore:
        """Wait on the event loop until the engine takes another sequence; the
        caller must ``release()`` the returned semaphore when its stream ends."""
        loop = asyncio.get_running_loop()
        slots = self._admission.setdefault(loop, asyncio.Semaphore(self._info["max_running_sequences"]))
        self._queued += 1
        try:
            await slots.acquire()
        finally:
            self._queued -= 1
        return slots

    async def off_loop(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking call (``next(stream)``, ``chat``) on the session's
        waiting threads, so the event loop keeps going."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._waiters, functools.partial(function, *args, **kwargs))

    def embed(self, inputs: EmbeddingInputs, *, dimensions: int | None = None, truncate: bool = False) -> list[Embedding]:
        """The embeddings of ``inputs`` (a text, texts, or token-id lists),
        in order, from an embedding model; all go to the engine at once, which
        batches those of equal length. ``dimensions`` keeps that many leading
        components (`Embedding.shortened`). An input longer than the context
        window is a `ContextOverflowError`, or cut to its first tokens with
        ``truncate``."""
        answers = self._engine.embed(engine_inputs(inputs), truncate=truncate)
        embeddings = [Embedding.from_engine(raw, tokens) for raw, tokens in answers]
        return embeddings if dimensions is None else [e.shortened(dimensions) for e in embeddings]

    async def aembed(self, inputs: EmbeddingInputs, *, dimensions: int | None = None, truncate: bool = False) -> list[Embedding]:
        """:meth:`embed` without blocking the event loop."""
        return await self.off_loop(lambda: self.embed(inputs, dimensions=dimensions, truncate=truncate))

    def count_tokens(self, messages: Sequence[Message], sampling: SamplingParams | None = None, **tools: Unpack[ToolOptions]) -> int:
        """Prompt tokens of ``messages`` after the model's chat template, with
        the request's ``tools``/``tool_choice`` applied and ``sampling``'s
        ``think``/``reasoning_effort`` told to the template (as :meth:`stream`
        sends them)."""
        request = self._with_tools(messages, tools, constrained=False)
        try:
            return len(self._engine.tokenize(list[Message](request.messages), sampling=sampling))
        except RequestError as error:
            if type(error) is not RequestError:  # a ContextOverflowError keeps its class and fields
                raise
            # The chat template's errors (none in the files, a failed render) name the model's file.
            raise RequestError(f"{self._info['model']}: {error}") from None

    def check_context(self, messages: Sequence[Message], sampling: SamplingParams, **tools: Unpack[ToolOptions]) -> int:
        """The prompt's tokens (see :meth:`count_tokens`); raise
        `ContextOverflowError` if they plus ``sampling.max_tokens`` exceed the context window."""
        self._check_writes()
        prompt_tokens = self.count_tokens(messages, sampling, **tools)
        self._check_fits(prompt_tokens, sampling.max_tokens)
        return prompt_tokens

    def _check_writes(self) -> None:
        """A `RequestError` for an embedding model, which writes no text."""
        if self.task == "embedding":
            raise RequestError(f"{self._info['model']}: an embedding model writes no text; use embed()")

    def _check_fits(self, prompt_tokens: int, max_tokens: int | None) -> None:
        answer_tokens = max_tokens or 1
        if self.context_length is not None and prompt_tokens + answer_tokens > self.context_length:
            raise context_overflow(prompt_tokens, answer_tokens, self.context_length)

    def stream(self, messages: Sequence[Message], sampling: SamplingParams | None = None, **tools: Unpack[ToolOptions]) -> _core.ChatStream:
        """Stream the answer as ``ChatChunk``s; the last one has ``finish_reason``
        and ``usage``. Leaving the loop early (or ``close()``) aborts the request.

        ``sampling``: how the answer is written (`SamplingParams`; none:
        greedy, up to the context window). Tools: ``tools`` (OpenAI tool
        definitions) and ``tool_choice`` ("auto", "none", "required" or
        ``{"type": "function", "function": {"name": ...}}``); calls arrive in
        the last chunk's ``tool_calls``.
        """
        sampling = sampling or SamplingParams()
        self.check_context(messages, sampling, **tools)
        return self.start(messages, sampling, **tools)

    def start(self, messages: Sequence[Message], sampling: SamplingParams | None = None, **tools: Unpack[ToolOptions]) -> _core.ChatStream:
        """:meth:`stream` without the context check, for callers that already
        counted the prompt (:meth:`check_context`, or a fitted conversation)."""
        sampling = sampling or SamplingParams()
        request = self._with_tools(messages, tools, constrained=sampling.constrained)
        if request.call_schema is not None:
            sampling = sampling.replace(json_schema=request.call_schema)
        tool_choice = "auto" if request.tools_json is not None else None
        return self._engine.stream(list[Message](request.messages), sampling=sampling, tools=request.tools_json, tool_choice=tool_choice)

    def _with_tools(self, messages: Sequence[Message], tools: ToolOptions, *, constrained: bool) -> tool_calling.ToolRequest:
        """The engine's messages and tools for a request (see `tools.prepare`);
        image parts read into bytes (`images.resolve_images`)."""
        if has_images(messages):
            if not self._info["vision"]:
                raise RequestError(f"{self._info['model']}: this model reads text only; images cannot be given to it")
            messages = resolve_images(messages)
        offered = tools.get("tools")
        tool_choice = tools.get("tool_choice")
        if not offered:
            if tool_choice not in (None, "none", "auto"):
                raise RequestError("tool_choice: needs tools")
            return tool_calling.ToolRequest(tool_calling.messages_for_engine(messages))
        return tool_calling.prepare(messages, offered, tool_choice or "auto", chat_template=self._info["chat_template"], constrained=constrained)

    def stream_completion(self, prompt: str, sampling: SamplingParams | None = None) -> _core.ChatStream:
        """Stream the continuation of raw ``prompt`` text (no chat template),
        written as ``sampling`` says (see :meth:`stream`)."""
        sampling = sampling or SamplingParams()
        self._check_writes()
        prompt_tokens = len(self._engine.tokenize(prompt=prompt))
        self._check_fits(prompt_tokens, sampling.max_tokens)
        return self._engine.stream(prompt=prompt, sampling=sampling)

    def complete(self, prompt: str, sampling: SamplingParams | None = None) -> ChatResult:
        """The whole continuation of ``prompt`` at once."""
        return collect(self.stream_completion(prompt, sampling))

    def chat(self, messages: Sequence[Message], sampling: SamplingParams | None = None, *, n: int = 1, **tools: Unpack[ToolOptions]) -> ChatResult:
        """The whole answer at once (same options as :meth:`stream`). With
        ``n`` above 1 the engine writes n answers together (one batch) and
        the result's ``choices`` holds them all."""
        first, *others = (sampling or SamplingParams()).choices(n)
        streams = [self.stream(messages, first, **tools)]
        try:
            streams += (self.start(messages, params, **tools) for params in others)
            first_result, *other_results = [collect(stream) for stream in streams]
        finally:
            for stream in streams:
                stream.close()
        return dataclasses.replace(first_result, others=tuple(other_results))

    async def astream(
        self, messages: Sequence[Message], sampling: SamplingParams | None = None, **tools: Unpack[ToolOptions]
    ) -> AsyncIterator[ChatChunk]:
        """:meth:`stream` as an async iterator; waiting happens off the event loop."""
        async for chunk in self.achunks(lambda: self.stream(messages, sampling, **tools)):
            yield chunk

    async def achunks(self, start: Callable[[], _core.ChatStream], wait: Waiter | None = None) -> AsyncIterator[ChatChunk]:
        """The chunks of the stream ``start()`` opens (on the session's
        threads) once the engine has a place for it. Every wait goes through
        ``wait`` where given (the service's deadline and client connection:
        it hands what arrives after it gave up to ``on_abandon``); leaving
        early closes the stream at once."""
        wait = wait or _wait_plainly
        slots = await wait(self.admission(), on_abandon=lambda s: s.release())
        try:
            stream = await wait(self.off_loop(start), on_abandon=lambda s: s.close())
            try:
                while (chunk := await wait(self.off_loop(next, stream, None))) is not None:
                    yield chunk
            finally:
                stream.close()
        finally:
            slots.release()

    async def achat(
        self, messages: Sequence[Message], sampling: SamplingParams | None = None, *, n: int = 1, **tools: Unpack[ToolOptions]
    ) -> ChatResult:
        """:meth:`chat` without blocking the event loop."""
        slots = await self.admission()
        try:
            return await self.off_loop(lambda: self.chat(messages, sampling, n=n, **tools))
        finally:
            slots.release()

    def info(self) -> ModelInfo:
        """Model path, format, architecture, layers, device, dtype, paged
        attention (on/off, block size, KV memory), topology, LoRA adapters in
        effect, and while open the engine's counters (`engine_stats`): a
        `SessionInfo` then, only the `ModelInfo` once closed."""
        info = self._engine.info()
        if info["closed"]:
            return info
        return SessionInfo(**info, **self._engine.engine_stats())

    def tokenize(
        self,
        messages: Sequence[Message] | None = None,
        *,
        prompt: str | None = None,
        add_generation_prompt: bool = True,
        add_special_tokens: bool | None = None,
    ) -> list[int]:
        """Token ids of ``messages`` after the chat template (with the
        assistant's opening when ``add_generation_prompt``), or of a raw
        ``prompt``; special tokens such as a BOS are added to a prompt unless
        ``add_special_tokens`` is false (the template writes its own)."""
        return self._engine.tokenize(
            None if messages is None else list(messages),
            prompt=prompt,
            add_generation_prompt=add_generation_prompt,
            add_special_tokens=add_special_tokens,
        )

    def detokenize(self, tokens: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """The text of ``tokens``; ids outside the vocabulary are an error."""
        vocabulary = self._info.get("vocab_size")
        for token in tokens:
            if isinstance(token, bool) or not isinstance(token, int) or token < 0 or (vocabulary is not None and token >= vocabulary):
                raise RequestError(f"tokens: {token!r} is not a token id of this model")
        return self._engine.detokenize(list(tokens), skip_special_tokens=skip_special_tokens)

    def score(self, text: str | Sequence[int]) -> list[float]:
        """Log-probability of each token of ``text`` (after its first) given the
        tokens before it: the model reads the text rather than writing.
        ``text`` may also be token ids (e.g. a prompt's and an answer's)."""
        return self._engine.score(self._tokens_to_score(text))

    def score_distributions(self, text: str | Sequence[int]) -> list[bytes]:
        """The model's whole next-token distribution after each token of
        ``text`` but the last (as :meth:`score` reads it): one row per
        position, the natural-log probability of every token id as
        little-endian float32 bytes (``numpy.frombuffer(row, "<f4")``)."""
        return self._engine.score_distributions(self._tokens_to_score(text))

    def _tokens_to_score(self, text: str | Sequence[int]) -> list[int]:
        """The tokens of ``text`` (or ``text`` itself, when token ids), if
        there are at least 2 and all but the last fit in the context window."""
        tokens = self._engine.tokenize(prompt=text) if isinstance(text, str) else list(text)
        if len(tokens) < 2:
            raise RequestError("score: the text is shorter than 2 tokens")
        self._check_fits(len(tokens) - 1, 1)
        return tokens

    def perplexity(self, text: str) -> float:
        """``exp`` of the mean negative log-probability of ``text``'s tokens:
        lower means the model finds the text more likely."""
        logprobs = self.score(text)
        return math.exp(-sum(logprobs) / len(logprobs))

    def engine_stats(self) -> EngineStats:
        """Engine counters since load: ``sequences`` started and
        ``prefix_cache_hits`` (sequences whose prompt start was reused); and
        what the caches hold as of the engine's last step:
        ``prefix_cache_sequences`` and ``prefix_cache_bytes`` kept for reuse,
        ``kv_cache_tokens`` of the sequences in the engine, with paged
        attention ``kv_cache_blocks_used`` of ``kv_cache_blocks`` (else None),
        and ``sequences_running`` (decoded or read in that step) and
        ``sequences_waiting`` (held back by the scheduler)."""
        return self._engine.engine_stats()

    def sequence_counts(self) -> SequenceCounts:
        """``running``: streams being generated; ``waiting``: async requests
        queued for one of the engine's ``max_num_seqs`` places."""
        return SequenceCounts(running=self._engine.sequence_counts()["running"], waiting=self._queued)

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def close(self) -> None:
        """Stop the engine and free the model."""
        self._engine.close()
        self._waiters.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._info["device"]
        return f"Session({self._info['model']!r}, {state})"
