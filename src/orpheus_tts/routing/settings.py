"""Routing settings: one frozen value, built once at the edge and passed down."""

from __future__ import annotations

import math
from dataclasses import dataclass

from orpheus_tts.protocol import DEFAULT_MAX_LINE_BYTES

__all__ = [
    "DEFAULT_BREAKER_COOLDOWN_S",
    "DEFAULT_BREAKER_FAILURE_THRESHOLD",
    "DEFAULT_BUDGET_WINDOW_S",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_DEADLINE_GRACE_S",
    "DEFAULT_EWMA_DECAY_S",
    "DEFAULT_FAILURE_PENALTY_MS",
    "DEFAULT_HEDGE_BUDGET_RATIO",
    "DEFAULT_HEDGE_BUDGET_RESERVE",
    "DEFAULT_HEDGE_LOSER_WAIT_MS",
    "DEFAULT_HEDGE_TTFB_MS",
    "DEFAULT_KEEPALIVE_EXPIRY_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_ERROR_BODY_BYTES",
    "DEFAULT_MAX_KEEPALIVE_CONNECTIONS",
    "DEFAULT_MAX_RETRY_AFTER_S",
    "DEFAULT_POOL_TIMEOUT_S",
    "DEFAULT_PRIOR_TTFB_MS",
    "DEFAULT_PROBE_TIMEOUT_S",
    "DEFAULT_QUEUE_HINT_DECAY_S",
    "DEFAULT_READ_TIMEOUT_S",
    "DEFAULT_RETRY_BUDGET_RATIO",
    "DEFAULT_RETRY_BUDGET_RESERVE",
    "DEFAULT_WRITE_TIMEOUT_S",
    "RoutingSettings",
]

DEFAULT_HEDGE_TTFB_MS = 400.0
DEFAULT_HEDGE_BUDGET_RATIO = 0.1
DEFAULT_HEDGE_BUDGET_RESERVE = 10
DEFAULT_HEDGE_LOSER_WAIT_MS = 2000.0
DEFAULT_RETRY_BUDGET_RATIO = 0.2
DEFAULT_RETRY_BUDGET_RESERVE = 10
DEFAULT_BUDGET_WINDOW_S = 10.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BREAKER_FAILURE_THRESHOLD = 5
DEFAULT_BREAKER_COOLDOWN_S = 5.0
DEFAULT_EWMA_DECAY_S = 10.0
DEFAULT_PRIOR_TTFB_MS = 250.0
DEFAULT_FAILURE_PENALTY_MS = 2000.0
DEFAULT_QUEUE_HINT_DECAY_S = 5.0
DEFAULT_MAX_RETRY_AFTER_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# Workers hold the response headers until the first audio, which may wait in a
# queue for up to the server deadline (60 s by default): reads must outlast it.
DEFAULT_READ_TIMEOUT_S = 90.0
DEFAULT_DEADLINE_GRACE_S = 30.0
DEFAULT_WRITE_TIMEOUT_S = 10.0
DEFAULT_POOL_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_KEEPALIVE_CONNECTIONS = 64
# Below uvicorn's 5 s keep-alive, so we drop an idle connection before the server does.
DEFAULT_KEEPALIVE_EXPIRY_S = 4.0
DEFAULT_MAX_ERROR_BODY_BYTES = 64 * 1024
DEFAULT_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RoutingSettings:
    """How a :class:`~orpheus_tts.routing.Router` picks, hedges, retries and breaks circuits."""

    hedge_ttfb_ms: float | None = DEFAULT_HEDGE_TTFB_MS
    """Launch one backup request when no audio arrived after this long; ``None`` or 0 disables."""
    hedge_budget_ratio: float = DEFAULT_HEDGE_BUDGET_RATIO
    """Hedges allowed per request over the budget window (0.1 = at most 10 % extra requests)."""
    hedge_budget_reserve: int = DEFAULT_HEDGE_BUDGET_RESERVE
    """Hedges always allowed per budget window, so light traffic can still hedge."""
    hedge_loser_wait_ms: float = DEFAULT_HEDGE_LOSER_WAIT_MS
    """Once a hedged race is won, how long the loser may go on in the background until its first
    audio, so that its real latency is measured rather than a lower bound; 0 cancels it at once."""
    retry_budget_ratio: float = DEFAULT_RETRY_BUDGET_RATIO
    """Failovers allowed per request over the budget window."""
    retry_budget_reserve: int = DEFAULT_RETRY_BUDGET_RESERVE
    """Failovers always allowed per budget window."""
    budget_window_s: float = DEFAULT_BUDGET_WINDOW_S
    """Length of the sliding window both budgets are counted over, in seconds."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Most upstream requests for one call, first try and failovers (a hedge not counted)."""
    breaker_failure_threshold: int = DEFAULT_BREAKER_FAILURE_THRESHOLD
    """Consecutive failures that open an endpoint's circuit."""
    breaker_cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S
    """How long an open circuit refuses traffic before it admits one probe, in seconds."""
    ewma_decay_s: float = DEFAULT_EWMA_DECAY_S
    """Time constant of the time-to-first-audio peak-EWMA, in seconds."""
    prior_ttfb_ms: float = DEFAULT_PRIOR_TTFB_MS
    """Time to first audio assumed for an endpoint before its first request, in milliseconds."""
    failure_penalty_ms: float = DEFAULT_FAILURE_PENALTY_MS
    """A failed request counts as at least this slow, so traffic leaves a failing endpoint at once."""
    queue_hint_decay_s: float = DEFAULT_QUEUE_HINT_DECAY_S
    """Time constant over which a server's queue-depth hint fades, in seconds."""
    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S
    """Longest ``Retry-After`` honoured when demoting an overloaded endpoint, in seconds."""
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    """TCP connect timeout, in seconds."""
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    """Longest silence between two reads of a response, in seconds (raised to ``timeout_s`` + grace)."""
    deadline_grace_s: float = DEFAULT_DEADLINE_GRACE_S
    """Added to a request's ``timeout_s`` to size its read timeout, in seconds."""
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    """Longest wait to send request bytes, in seconds."""
    pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S
    """Longest wait for a free connection when ``max_connections`` are busy, in seconds."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections open at once per endpoint."""
    max_keepalive_connections: int = DEFAULT_MAX_KEEPALIVE_CONNECTIONS
    """Idle connections kept per endpoint for reuse."""
    keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S
    """How long an idle connection is kept, in seconds."""
    max_error_body_bytes: int = DEFAULT_MAX_ERROR_BODY_BYTES
    """Largest error body read from a non-2xx response, in bytes."""
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    """Longest NDJSON line accepted, in bytes."""
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    """Timeout of one health probe (``GET /readyz``), in seconds."""
    lean_http: bool = False
    """POST streams to plain ``http://`` endpoints with the lean client (``routing/leanhttp.py``)
    instead of httpx; an endpoint given its own httpx transport always uses httpx."""
    stream_path: str = "/v1/tts/stream"
    """Path of the streaming synthesis endpoint."""
    probe_path: str = "/readyz"
    """Path a health probe requests."""

    def __post_init__(self) -> None:
        if self.hedge_ttfb_ms is not None and (not math.isfinite(self.hedge_ttfb_ms) or self.hedge_ttfb_ms < 0):
            raise ValueError(f"hedge_ttfb_ms must be None or a non-negative number, got {self.hedge_ttfb_ms}")
        for name in ("hedge_budget_ratio", "retry_budget_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for name in ("hedge_budget_reserve", "retry_budget_reserve"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("max_attempts", "breaker_failure_threshold", "max_connections", "max_line_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_keepalive_connections < 0 or self.max_error_body_bytes < 0:
            raise ValueError("max_keepalive_connections and max_error_body_bytes must not be negative")
        for name in (
            "budget_window_s",
            "breaker_cooldown_s",
            "ewma_decay_s",
            "prior_ttfb_ms",
            "failure_penalty_ms",
            "queue_hint_decay_s",
            "connect_timeout_s",
            "read_timeout_s",
            "write_timeout_s",
            "pool_timeout_s",
            "probe_timeout_s",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name in ("max_retry_after_s", "deadline_grace_s", "keepalive_expiry_s", "hedge_loser_wait_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        for name in ("stream_path", "probe_path"):
            if not getattr(self, name).startswith("/"):
                raise ValueError(f"{name} must start with '/', got {getattr(self, name)!r}")

    @property
    def hedge_delay_s(self) -> float | None:
        """The hedge delay in seconds, or ``None`` when hedging is off."""
        return self.hedge_ttfb_ms / 1000.0 if self.hedge_ttfb_ms else None

    def read_timeout_for(self, request_timeout_s: float | None) -> float:
        """The read timeout for a request asking for the server deadline ``request_timeout_s``."""
        if request_timeout_s is None:
            return self.read_timeout_s
        return max(self.read_timeout_s, request_timeout_s + self.deadline_grace_s)
