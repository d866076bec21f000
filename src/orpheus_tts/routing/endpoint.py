"""One upstream base URL: its long-lived HTTP client and its live statistics."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from orpheus_tts.protocol import HEADER_INFLIGHT, HEADER_QUEUE_DEPTH
from orpheus_tts.routing.breaker import Breaker, BreakerState, Permit
from orpheus_tts.routing.scoring import DecayingValue, PeakEwma, load_score
from orpheus_tts.routing.settings import RoutingSettings
from orpheus_tts.routing.transport import HttpxStreamClient, StreamClient

__all__ = ["Endpoint", "EndpointSnapshot", "normalize_url"]


def normalize_url(url: str) -> str:
    """``url`` without surrounding blanks or a trailing slash; raises ``ValueError`` unless http(s)."""
    if not isinstance(url, str):
        raise TypeError(f"an endpoint URL must be a string, got {type(url).__name__}")
    cleaned = url.strip().rstrip("/")
    parsed = httpx.URL(cleaned)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"an endpoint URL must be http(s)://host[:port][/prefix], got {url!r}")
    return cleaned


@dataclass(frozen=True)
class EndpointSnapshot:
    """An endpoint's state at one instant. Not a stable API: fields may be added."""

    url: str
    """Base URL."""
    score: float
    """Current load score (lower is preferred), ms-weighted."""
    ttfb_ewma_ms: float
    """Peak-EWMA of the time to first audio, in milliseconds."""
    inflight: int
    """Requests this router has open on the endpoint."""
    queue_hint: float
    """Server-reported queue depth, faded by age."""
    server_inflight: int | None
    """Requests the server last said it was running (``X-Inflight``)."""
    breaker: BreakerState
    """Circuit state."""
    healthy: bool
    """False while health probes say the endpoint is down."""
    consecutive_failures: int
    """Failures since the last success."""
    circuit_opens: int
    """Times the circuit opened."""
    requests: int
    """Requests sent (hedges and failovers included)."""
    failures: int
    """Requests that failed on the endpoint's side."""
    hedges_sent: int
    """Backup requests sent to this endpoint."""
    hedges_won: int
    """Backup requests that delivered audio first."""


class Endpoint:
    """A base URL, one long-lived ``httpx.AsyncClient`` and the stats routing needs.

    The client is created here but opens no connection until the first request.
    ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        url: str,
        settings: RoutingSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        prior_ttfb_ms: float | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.url = normalize_url(url)
        self.settings = settings = settings or RoutingSettings()
        self._clock = clock
        now = clock()
        prior = settings.prior_ttfb_ms if prior_ttfb_ms is None else prior_ttfb_ms
        self.ttfb = PeakEwma(prior, settings.ewma_decay_s, now)
        self.queue_hint = DecayingValue(settings.queue_hint_decay_s)
        self.server_inflight: int | None = None
        self.breaker = Breaker(settings.breaker_failure_threshold, settings.breaker_cooldown_s)
        self.healthy = True
        self.inflight = 0
        self.requests = 0
        self.failures = 0
        self.hedges_sent = 0
        self.hedges_won = 0
        self._background: set[asyncio.Task[None]] = set()
        self._down_listeners: set[Callable[[Endpoint], None]] = set()
        self.recovery_prior: Callable[[Endpoint], float] | None = None
        """The latency an endpoint back from down starts from (its router's: the fleet's median);
        ``None``: the settings' prior."""
        self.epoch = 0
        """Incremented when the endpoint comes back after probes marked it down: what requests
        sent before that learned (a latency, a failure) no longer describes it."""
        self.busy_until = 0.0
        """Monotonic time until which a 503's ``Retry-After`` demotes this endpoint."""
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive_connections,
            keepalive_expiry=settings.keepalive_expiry_s,
        )
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.write_timeout_s,
            pool=settings.pool_timeout_s,
        )
        lean = transport is None and settings.lean_http and self.url.startswith("http://")
        if transport is None:
            transport = httpx.AsyncHTTPTransport(limits=limits, retries=0)
        self.client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        self.stream_url = self.url + settings.stream_path
        self.streams: StreamClient = (
            _lean_client(
                self.stream_url,
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_keepalive_connections,
                keepalive_expiry_s=settings.keepalive_expiry_s,
            )
            if lean
            else HttpxStreamClient(self.client, self.stream_url)
        )
        """How streams are POSTed: the lean client (``settings.lean_http``, plain http://, no custom
        ``transport``) or the httpx client."""
        self.probe_url = self.url + settings.probe_path

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r})"

    # ------------------------------------------------------------------ scoring

    def load(self, now: float) -> float:
        return load_score(self.ttfb.value(now), self.inflight, self.queue_hint.value(now))

    def available(self, now: float) -> bool:
        """Healthy and admitted by the breaker (no side effect)."""
        return self.healthy and self.breaker.available(now)

    def busy(self, now: float) -> bool:
        return now < self.busy_until

    # ------------------------------------------------------------------ request accounting

    def begin(self, *, hedge: bool) -> None:
        self.inflight += 1
        self.requests += 1
        if hedge:
            self.hedges_sent += 1

    def end(self) -> None:
        self.inflight -= 1

    def observe_ttfb(self, elapsed_s: float, now: float) -> None:
        self.ttfb.observe(elapsed_s * 1000.0, now)

    def observe_abandoned(self, elapsed_s: float, now: float) -> None:
        """A request cancelled before its first audio took at least ``elapsed_s`` (held until a real sample)."""
        self.ttfb.observe_censored(elapsed_s * 1000.0, now)

    def observe_headers(self, headers: Mapping[str, str], now: float) -> None:
        """Read the load hints (``X-Queue-Depth``, ``X-Inflight``) of a response."""
        self._observe_load(headers.get(HEADER_QUEUE_DEPTH), headers.get(HEADER_INFLIGHT), now)

    def observe_metrics(self, values: Mapping[str, Any], now: float) -> None:
        """Read the load hints (``queue_depth``, ``inflight``) of a ``metrics`` frame."""
        self._observe_load(values.get("queue_depth"), values.get("inflight"), now)

    def _observe_load(self, depth: Any, running: Any, now: float) -> None:
        depth_value, running_value = _number(depth), _number(running)
        if depth_value is not None:
            self.queue_hint.set(depth_value, now)
        if running_value is not None:
            self.server_inflight = int(running_value)

    def demote_until(self, retry_after_s: float | None, now: float) -> None:
        """Prefer other endpoints for a while after an ``overloaded`` answer."""
        wait = self.settings.max_retry_after_s if retry_after_s is None else retry_after_s
        self.busy_until = max(self.busy_until, now + min(max(wait, 0.0), self.settings.max_retry_after_s))

    def succeeded(self, permit: Permit) -> None:
        self.breaker.record_success(permit)

    def failed(self, permit: Permit, now: float) -> None:
        self.failures += 1
        self.ttfb.observe_at_least(self.settings.failure_penalty_ms, now)
        self.breaker.record_failure(permit, now)

    def released(self, permit: Permit) -> None:
        self.breaker.release(permit)

    # ------------------------------------------------------------------ health

    def mark_up(self) -> None:
        """A health probe succeeded: take traffic again; an open circuit may probe at once.

        An endpoint back after being down starts afresh (:meth:`recover`).
        """
        was_down = not self.healthy
        self.healthy = True
        self.breaker.end_cooldown(self._clock())
        if was_down:  # in the same step as it turns healthy, so no request sees it with an older estimate
            prior = self.recovery_prior
            self.recover(self.settings.prior_ttfb_ms if prior is None else prior(self))

    def recover(self, prior_ttfb_ms: float) -> None:
        """Forget the latency and load learnt before the endpoint went down, and start from ``prior_ttfb_ms``.

        Without this, the penalties of the streams it stalled keep its score so high
        that it gets no traffic (and so no fresh sample) long after it is back.
        """
        now = self._clock()
        self.epoch += 1
        self.ttfb.restart(prior_ttfb_ms, now)
        self.queue_hint.set(0.0, now)
        self.busy_until = 0.0

    def mark_down(self) -> None:
        """A health probe failed: take no traffic until a probe succeeds; tell the waiting requests."""
        was_healthy = self.healthy
        self.healthy = False
        if was_healthy:
            for listener in list(self._down_listeners):
                listener(self)

    def on_down(self, listener: Callable[[Endpoint], None]) -> Callable[[], None]:
        """Call ``listener`` when probes mark the endpoint down; returns the function that unsubscribes."""
        self._down_listeners.add(listener)
        return lambda: self._down_listeners.discard(listener)

    async def probe(self) -> bool:
        """``GET /readyz``: mark the endpoint up on 200, down otherwise; returns the verdict."""
        try:
            response = await self.client.get(self.probe_url, timeout=self.settings.probe_timeout_s)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            self.mark_up()
        else:
            self.mark_down()
        return ok

    # ------------------------------------------------------------------ reporting

    def snapshot(self) -> EndpointSnapshot:
        now = self._clock()
        return EndpointSnapshot(
            url=self.url,
            score=round(self.load(now), 3),
            ttfb_ewma_ms=round(self.ttfb.value(now), 3),
            inflight=self.inflight,
            queue_hint=round(self.queue_hint.value(now), 3),
            server_inflight=self.server_inflight,
            breaker=self.breaker.state(now),
            healthy=self.healthy,
            consecutive_failures=self.breaker.consecutive_failures,
            circuit_opens=self.breaker.opens,
            requests=self.requests,
            failures=self.failures,
            hedges_sent=self.hedges_sent,
            hedges_won=self.hedges_won,
        )

    def run_in_background(self, work: Coroutine[Any, Any, None], timeout_s: float) -> None:
        """Run ``work`` (connection housekeeping) off the caller's path, cancelled after ``timeout_s``."""
        task = asyncio.ensure_future(work)
        timer = asyncio.get_running_loop().call_later(timeout_s, task.cancel)
        self._background.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            timer.cancel()
            self._background.discard(finished)
            if not finished.cancelled():
                finished.exception()  # retrieved: housekeeping failures are not errors

        task.add_done_callback(done)

    async def aclose(self) -> None:
        """Finish background housekeeping, then close the HTTP client."""
        pending = list(self._background)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        await self.streams.aclose()
        await self.client.aclose()


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _lean_client(url: str, **limits: Any) -> StreamClient:
    """The lean client, imported only where it is used: it needs httptools, which the SDK alone lacks."""
    from orpheus_tts.routing.leanhttp import LeanStreamClient

    return LeanStreamClient(url, **limits)
