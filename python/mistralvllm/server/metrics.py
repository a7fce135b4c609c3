"""Prometheus metrics of the service: ours (``mistralvllm_*``), and the same
figures under vLLM's names (``vllm:*``, labelled ``model_name``) where the
meaning is the same, so that dashboards made for vLLM work unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._core import Usage
from ..session import Session

# The loaded models' sessions, by model name.
LoadedSessions = Callable[[], Sequence[tuple[str, Session]]]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


def _vllm_gauge(name: str, documentation: str, values: Sequence[tuple[str, float]]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["model_name"])
    for model_name, value in values:
        gauge.add_metric([model_name], value)
    return gauge


class _SequenceCollector(Collector):
    """Running and waiting sequences, read from the loaded sessions at scrape
    time (ours summed over the models, vLLM's per model)."""

    def __init__(self, sessions: LoadedSessions) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = [(name, session.sequence_counts()) for name, session in self._sessions()]
        running = [(name, float(count["running"])) for name, count in counts]
        waiting = [(name, float(count["waiting"])) for name, count in counts]
        yield GaugeMetricFamily("mistralvllm_sequences_running", "Sequences being generated", value=sum(v for _, v in running))
        yield GaugeMetricFamily("mistralvllm_sequences_waiting", "Requests waiting to enter the engine", value=sum(v for _, v in waiting))
        yield _vllm_gauge("vllm:num_requests_running", "Number of requests being generated", running)
        yield _vllm_gauge("vllm:num_requests_waiting", "Number of requests waiting for a place in the engine", waiting)


class _EngineCollector(Collector):
    """The engine's own counters (sequences begun, prefix-cache hits) and what
    its caches hold, read at scrape time and summed over the loaded models."""

    def __init__(self, sessions: LoadedSessions) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        every = [(name, session.engine_stats()) for name, session in self._sessions()]
        stats: dict[str, int] = {}
        for _, each in every:
            for key, value in each.items():
                stats[key] = stats.get(key, 0) + (value if isinstance(value, int) else 0)
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
        # vLLM's kv_cache_usage_perc: a fraction from 0 to 1 (paged attention only).
        usage = [(name, (each["kv_cache_blocks_used"] or 0) / blocks) for name, each in every if (blocks := each.get("kv_cache_blocks"))]
        if usage:
            used, total = stats.get("kv_cache_blocks_used", 0), stats.get("kv_cache_blocks", 0)
            yield GaugeMetricFamily("mistralvllm_kv_cache_usage_perc", "Fraction of the KV-cache blocks in use", value=used / total)
            yield _vllm_gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 means 100 percent)", usage)
        # Speculative decoding (models with a draft model only), under vLLM's names too.
        drafted = {
            name: (each["draft_tokens_proposed"] or 0, each["draft_tokens_accepted"] or 0)
            for name, each in every
            if each["draft_tokens_proposed"] is not None
        }
        if drafted:
            for column, (ours, theirs, documentation) in enumerate(
                (
                    ("mistralvllm_draft_tokens", "vllm:spec_decode_num_draft_tokens", "Draft tokens proposed"),
                    ("mistralvllm_draft_tokens_accepted", "vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted"),
                ),
            ):
                yield CounterMetricFamily(ours, documentation, value=sum(counts[column] for counts in drafted.values()))
                counter = CounterMetricFamily(theirs, documentation, labels=["model_name"])
                for name, counts in drafted.items():
                    counter.add_metric([name], counts[column])
                yield counter


class ServiceMetrics:
    """The service's registry: request counts and timings, and the engine's
    gauges read at scrape time; ``model_name`` labels the vLLM-named ones."""

    def __init__(self, sessions: LoadedSessions) -> None:
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
        registry, labels = self.registry, ["model_name"]
        self.vllm_prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed", labels, registry=registry)
        self.vllm_generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed", labels, registry=registry)
        self.vllm_time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            buckets=LATENCY_BUCKETS,
            labelnames=labels,
            registry=registry,
        )
        self.vllm_time_per_output_token = Histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds",
            buckets=TOKEN_LATENCY_BUCKETS,
            labelnames=labels,
            registry=registry,
        )
        self.vllm_e2e_request_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds",
            buckets=LATENCY_BUCKETS,
            labelnames=labels,
            registry=registry,
        )
        self.registry.register(_SequenceCollector(sessions))
        self.registry.register(_EngineCollector(sessions))

    def observe(self, model: str, usage: Usage | None, elapsed: float) -> None:
        """A request to ``model`` that reached the engine: its time, tokens and token timings."""
        self.request_duration.observe(elapsed)
        self.vllm_e2e_request_latency.labels(model).observe(elapsed)
        if usage is not None:
            self.prompt_tokens.inc(usage.prompt_tokens)
            self.completion_tokens.inc(usage.completion_tokens)
            self.time_to_first_token.observe(usage.time_to_first_token_s)
            self.vllm_prompt_tokens.labels(model).inc(usage.prompt_tokens)
            self.vllm_generation_tokens.labels(model).inc(usage.completion_tokens)
            self.vllm_time_to_first_token.labels(model).observe(usage.time_to_first_token_s)
            if usage.decode_tok_per_s > 0:
                self.time_per_output_token.observe(1 / usage.decode_tok_per_s)
                self.vllm_time_per_output_token.labels(model).observe(1 / usage.decode_tok_per_s)
