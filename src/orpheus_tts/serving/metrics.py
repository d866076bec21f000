"""Prometheus metrics shared by workers and the gateway (prefix ``orpheus_``).

Each app owns its own :class:`CollectorRegistry`, so two apps in one process
(tests, ``serve``) never mix their numbers. No label carries an unbounded
value: no keys, no request ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "EngineCounters", "ServiceMetrics"]

_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class ServiceMetrics:
    """The metrics every server exports; the gateway adds its own on the same registry."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("orpheus_requests", "Synthesis requests by outcome", ["role", "outcome"], registry=r)
        self.duration = Histogram(
            "orpheus_request_duration_seconds",
            "Whole request duration",
            ["role"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ttfa = Histogram(
            "orpheus_time_to_first_audio_seconds",
            "Admission to first audio chunk",
            ["role"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_wait = Histogram(
            "orpheus_queue_wait_seconds",
            "Time spent waiting for a slot",
            ["role"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.rtf = Histogram(
            "orpheus_real_time_factor",
            "Compute time divided by audio time",
            ["role"],
            buckets=_RTF_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter("orpheus_audio_seconds", "Seconds of audio produced", ["role"], registry=r)
        self.input_chars = Counter("orpheus_input_characters", "Characters of text accepted", ["role"], registry=r)
        self.running = Gauge("orpheus_requests_running", "Requests streaming now", ["role"], registry=r)
        self.waiting = Gauge("orpheus_requests_waiting", "Requests queued for admission", ["role"], registry=r)
        self.stream_capacity = Gauge(
            "orpheus_stream_capacity",
            "Streams the worker admits at once: its estimate of how many it keeps ahead of real time",
            ["role"],
            registry=r,
        )
        self.realtime_sockets = Gauge(
            "orpheus_realtime_sockets", "Realtime (/v1/tts/realtime) sockets open", ["role"], registry=r
        )
        self.realtime_contexts = Counter(
            "orpheus_realtime_contexts",
            "Realtime contexts by how they ended (done, cancelled, error, closed: the socket went away)",
            ["role", "outcome"],
            registry=r,
        )
        self.realtime_first_audio = Histogram(
            "orpheus_realtime_first_audio_seconds",
            "A realtime context's first text to its first audio sent",
            ["role"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.auth_failures = Counter("orpheus_auth_failures", "Rejected credentials by reason", ["reason"], registry=r)
        # This server's own series, looked up once: ``labels()`` takes a lock and builds a key per call.
        self.mine = _RoleSeries(self, role)
        self._outcomes: dict[str, Any] = {}

    def outcome(self, outcome: str) -> None:
        series = self._outcomes.get(outcome)
        if series is None:
            series = self._outcomes[outcome] = self.requests.labels(self.role, outcome)
        series.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RoleSeries:
    """A server's series of the per-request metrics that carry only its role as label."""

    __slots__ = ("audio_seconds", "duration", "input_chars", "ttfa")

    def __init__(self, metrics: ServiceMetrics, role: str) -> None:
        self.duration = metrics.duration.labels(role)
        self.ttfa = metrics.ttfa.labels(role)
        self.input_chars = metrics.input_chars.labels(role)
        self.audio_seconds = metrics.audio_seconds.labels(role)


class EngineCounters:
    """Exports an engine's own running totals (``engine.counters()``, when it has one).

    The Orpheus engine counts tokens, resynchronised and dropped tokens, frames
    and decoder calls; they appear as ``orpheus_engine_events_total{engine,event}``.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        counters = getattr(self._engine, "counters", None)
        if counters is None:
            return
        family = CounterMetricFamily(
            "orpheus_engine_events", "Engine-level event totals (tokens, resyncs, drops…)", labels=["engine", "event"]
        )
        for event, value in sorted(counters().items()):
            family.add_metric([str(self._engine.name), str(event)], float(value))
        yield family
