"""Prometheus metrics of the service."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._core import Usage

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class _SequenceCollector(Collector):
    """Running and waiting sequences, read from the session at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int] | None]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts() or {"running": 0, "waiting": 0}
        yield GaugeMetricFamily("mistralvllm_sequences_running", "Sequences being generated", value=counts["running"])
        yield GaugeMetricFamily("mistralvllm_sequences_waiting", "Requests waiting to enter the engine", value=counts["waiting"])


class _EngineCollector(Collector):
    """The engine's own counters (sequences begun, prefix-cache hits) and what
    its caches hold, read at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, int | None] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats() or {}
        yield CounterMetricFamily("mistralvllm_engine_sequences", "Sequences the engine began", value=stats.get("sequences") or 0)
        yield CounterMetricFamily(
            "mistralvllm_prefix_cache_hits", "Sequences whose prompt start came from the prefix cache", value=stats.get("prefix_cache_hits") or 0
        )
        yield GaugeMetricFamily(
            "mistralvllm_prefix_cache_bytes", "Bytes of KV data the prefix cache keeps", value=stats.get("prefix_cache_bytes") or 0
        )
        yield GaugeMetricFamily(
            "mistralvllm_prefix_cache_sequences", "Finished sequences the prefix cache keeps", value=stats.get("prefix_cache_sequences") or 0
        )
        yield GaugeMetricFamily(
            "mistralvllm_kv_cache_tokens", "Tokens in the KV caches of the sequences in the engine", value=stats.get("kv_cache_tokens") or 0
        )
        used, total = stats.get("kv_cache_blocks_used"), stats.get("kv_cache_blocks")
        if used is not None and total:
            # vLLM's kv_cache_usage_perc: a fraction from 0 to 1 (paged attention only).
            yield GaugeMetricFamily("mistralvllm_kv_cache_usage_perc", "Fraction of the KV-cache blocks in use", value=used / total)


class ServiceMetrics:
    """The service's registry: request counts and timings, and the engine's gauges read at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int] | None], engine_stats: Callable[[], dict[str, int | None] | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mistralvllm_requests", "Requests served", ["endpoint", "status"], registry=self.registry)
        self.prompt_tokens = Counter("mistralvllm_prompt_tokens", "Prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter("mistralvllm_completion_tokens", "Tokens generated", registry=self.registry)
        self.time_to_first_token = Histogram(
            "mistralvllm_time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.time_per_output_token = Histogram(
            "mistralvllm_time_per_output_token_seconds", "Decode time per generated token", buckets=TOKEN_LATENCY_BUCKETS, registry=self.registry
        )
        self.request_duration = Histogram(
            "mistralvllm_request_duration_seconds", "Whole request time", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.registry.register(_SequenceCollector(counts))
        self.registry.register(_EngineCollector(engine_stats))

    def observe(self, usage: Usage | None, elapsed: float) -> None:
        """A request that reached the engine: its time, tokens and token timings."""
        self.request_duration.observe(elapsed)
        if usage is not None:
            self.prompt_tokens.inc(usage.prompt_tokens)
            self.completion_tokens.inc(usage.completion_tokens)
            self.time_to_first_token.observe(usage.time_to_first_token_s)
            if usage.decode_tok_per_s > 0:
                self.time_per_output_token.observe(1 / usage.decode_tok_per_s)
