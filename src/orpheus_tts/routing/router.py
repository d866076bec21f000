"""The router: pick an endpoint, race a hedge, fail over, and hand back one stream.

The one entry point the SDK and the gateway share::

    router = Router(["http://w1:8001", "http://w2:8001"], RoutingSettings(hedge_ttfb_ms=300))
    async for frame in router.stream({"text": "Hello"}, {"Authorization": "Bearer KEY"}):
        ...  # ChunkFrame, MetricsFrame, then EosFrame or ErrorFrame
    await router.aclose()

or, for a caller that must decide its HTTP status before streaming::

    routed = await router.open(body, headers)   # raises before any audio, or commits
    async for frame in routed: ...

Nothing is yielded until one attempt has produced its first chunk (or ended),
so an exception out of :meth:`Router.open` (or before the first frame of
:meth:`Router.stream`) always means no audio was produced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import statistics
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from orpheus_tts.aio import Stopped, run_before
from orpheus_tts.protocol import NDJSON_MEDIA_TYPE, Frame
from orpheus_tts.routing.breaker import BreakerState
from orpheus_tts.routing.budget import Budget
from orpheus_tts.routing.endpoint import Endpoint, EndpointSnapshot, normalize_url
from orpheus_tts.routing.errors import (
    BrokenStreamError,
    NoEndpointAvailableError,
    RequestBodyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from orpheus_tts.routing.race import Attempt, RoutedStream, open_attempt
from orpheus_tts.routing.scoring import pick_two
from orpheus_tts.routing.settings import RoutingSettings

__all__ = ["Router", "RouterStats", "RoutingEvent"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutingEvent:
    """Something a metrics exporter counts: a hedge's fate or a failover."""

    kind: str
    """``"hedge"`` or ``"failover"``."""
    outcome: str
    """hedge: ``won`` (the backup delivered first), ``lost``, ``denied`` (budget);
    failover: ``sent`` or ``denied`` (budget or attempts exhausted)."""
    endpoint: str | None = None
    """The endpoint the event concerns, when there is one."""


@dataclass(frozen=True)
class RouterStats:
    """Counters since the router started."""

    requests: int
    """Calls to :meth:`Router.open` / :meth:`Router.stream`."""
    attempts: int
    """Upstream requests sent, hedges and failovers included."""
    hedges_launched: int
    hedges_won: int
    hedges_denied: int
    """Hedges the budget refused."""
    failovers: int
    failovers_denied: int
    """Failovers the retry budget refused."""


class Router:
    """Routes v1 synthesis requests over a set of endpoints; see the module docstring.

    ``endpoints`` are base URLs or :class:`Endpoint` objects. ``transport`` is
    given to every endpoint built here (tests pass ``httpx.MockTransport``).
    ``on_event`` is called for every :class:`RoutingEvent` (it must not block).
    """

    def __init__(
        self,
        endpoints: Sequence[str | Endpoint],
        settings: RoutingSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_event: Callable[[RoutingEvent], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or RoutingSettings()
        self._transport = transport
        self._on_event = on_event
        self._rng = rng or random.Random()
        self._clock = clock
        self._endpoints: list[Endpoint] = []
        for item in endpoints:
            self.add_endpoint(item)
        # Endpoints built a few microseconds apart would have priors faded by different amounts,
        # and the first-listed would always win the first choice: start them at one instant, so
        # equal endpoints tie exactly and the tie breaks at random.
        start = self._clock()
        for endpoint in self._endpoints:
            if not endpoint.ttfb.samples:
                endpoint.ttfb.restart(endpoint.ttfb.prior_ms, start)
        self._hedge_budget = Budget(
            self.settings.hedge_budget_ratio,
            self.settings.hedge_budget_reserve,
            self.settings.budget_window_s,
        )
        self._retry_budget = Budget(
            self.settings.retry_budget_ratio,
            self.settings.retry_budget_reserve,
            self.settings.budget_window_s,
        )
        self._counts = dict.fromkeys(
            (
                "requests",
                "attempts",
                "hedges_launched",
                "hedges_won",
                "hedges_denied",
                "failovers",
                "failovers_denied",
            ),
            0,
        )
        self._closed = False

    # ------------------------------------------------------------------ endpoints

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(self._endpoints)

    def add_endpoint(self, endpoint: str | Endpoint, *, transport: httpx.AsyncBaseTransport | None = None) -> Endpoint:
        """Add an endpoint; a new URL starts from the fleet's median latency (or the prior).

        ``transport`` is the new URL's own (the router's when ``None``)."""
        if isinstance(endpoint, str):
            url = normalize_url(endpoint)
            if any(e.url == url for e in self._endpoints):
                raise ValueError(f"endpoint {url} is already routed to")
            known = self._known_latencies()
            prior = statistics.median(known) if known else None
            endpoint = Endpoint(
                url, self.settings, transport=transport or self._transport, prior_ttfb_ms=prior, clock=self._clock
            )
        elif any(e.url == endpoint.url for e in self._endpoints):
            raise ValueError(f"endpoint {endpoint.url} is already routed to")
        endpoint.recovery_prior = self._recovery_prior
        self._endpoints.append(endpoint)
        return endpoint

    def _known_latencies(self, exclude: Endpoint | None = None) -> list[float]:
        """The latency estimates of the endpoints with samples (healthy ones, if ``exclude`` is given)."""
        now = self._clock()
        return [
            e.ttfb.value(now)
            for e in self._endpoints
            if e.ttfb.samples and (exclude is None or (e.healthy and e is not exclude))
        ]

    def _recovery_prior(self, endpoint: Endpoint) -> float:
        """Where an endpoint back from down starts: the other healthy endpoints' median latency, like
        a new endpoint (else the settings' prior)."""
        known = self._known_latencies(exclude=endpoint)
        return statistics.median(known) if known else self.settings.prior_ttfb_ms

    def remove_endpoint(self, url: str) -> Endpoint:
        """Stop routing to ``url``; the caller closes the returned endpoint once its streams end."""
        url = normalize_url(url)
        for endpoint in self._endpoints:
            if endpoint.url == url:
                self._endpoints.remove(endpoint)
                return endpoint
        raise KeyError(url)

    def snapshots(self) -> list[EndpointSnapshot]:
        """Every endpoint's live state (not a stable API)."""
        return [e.snapshot() for e in self._endpoints]

    def stats(self) -> RouterStats:
        return RouterStats(**self._counts)

    async def probe_all(self) -> dict[str, bool]:
        """Health-probe every endpoint at once (``GET /readyz``); marks each up or down."""
        endpoints = list(self._endpoints)
        results = await asyncio.gather(*(e.probe() for e in endpoints))  # one back starts from _recovery_prior
        return {e.url: ok for e, ok in zip(endpoints, results, strict=True)}

    async def aclose(self) -> None:
        """Close every endpoint's HTTP client; idempotent."""
        if self._closed:
            return
        self._closed = True
        for endpoint in self._endpoints:
            await endpoint.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ streaming

    async def stream(
        self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> AsyncGenerator[Frame, None]:
        """Frames of one synthesis: :meth:`open`, then iterate; the connection closes at the end."""
        routed = await self.open(body, headers)
        try:
            async for frame in routed:
                yield frame
        finally:
            await routed.aclose()

    async def open(self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> RoutedStream:
        """Race attempts until one produces audio; raises a routing error if none can.

        ``body`` is the v1 request object, sent as-is to every attempt;
        ``headers`` are added to each upstream request (authorization, request id).
        """
        if self._closed:
            raise RuntimeError("the router is closed")
        try:
            content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise RequestBodyError(f"the request body is not JSON-serializable: {exc}") from exc
        request_headers = {"content-type": "application/json", "accept": NDJSON_MEDIA_TYPE, **(headers or {})}
        timeout = self._timeout_for(body.get("timeout_s"))
        now = self._clock()
        self._counts["requests"] += 1
        self._hedge_budget.record_request(now)
        self._retry_budget.record_request(now)
        return await _Race(self, content, request_headers, timeout).run()

    def _timeout_for(self, requested: Any) -> httpx.Timeout:
        s = self.settings
        deadline = float(requested) if isinstance(requested, (int, float)) and not isinstance(requested, bool) else None
        if deadline is not None and not (math.isfinite(deadline) and deadline > 0):
            deadline = None
        return httpx.Timeout(
            connect=s.connect_timeout_s,
            read=s.read_timeout_for(deadline),
            write=s.write_timeout_s,
            pool=s.pool_timeout_s,
        )

    # ------------------------------------------------------------------ selection

    def _pick_first(self) -> Attempt:
        now = self._clock()
        candidates = [e for e in self._endpoints if e.available(now)]
        if not candidates:
            raise self._unavailable(now)
        # A half-open circuit needs one request to learn whether it recovered: give it this one.
        probes = [e for e in candidates if e.breaker.state(now) is BreakerState.HALF_OPEN]
        if probes:
            choice = self._rng.choice(probes)
        else:
            fresh = [e for e in candidates if not e.busy(now)] or candidates
            choice = pick_two(fresh, lambda e: e.load(now), self._rng)
        return self._attempt(choice, now, hedge=False)

    def _choose_next(self, exclude: set[Endpoint]) -> Endpoint | None:
        """The least-loaded available endpoint not in ``exclude``, or ``None``."""
        now = self._clock()
        candidates = [e for e in self._endpoints if e not in exclude and e.available(now)]
        if not candidates:
            return None
        fresh = [e for e in candidates if not e.busy(now)] or candidates
        # Shuffled first, so that equal loads do not always send the backup to the first URL listed.
        return min(self._rng.sample(fresh, len(fresh)), key=lambda e: e.load(now))

    def _attempt(self, endpoint: Endpoint, now: float, *, hedge: bool) -> Attempt:
        permit = endpoint.breaker.acquire(now)
        if permit is None:  # available() said yes in this same loop step: cannot happen
            raise RuntimeError(f"breaker of {endpoint.url} refused an admitted request")
        self._counts["attempts"] += 1
        return Attempt(endpoint, permit, hedge=hedge, clock=self._clock)

    def _unavailable(self, now: float) -> NoEndpointAvailableError:
        if not self._endpoints:
            return NoEndpointAvailableError([], None)
        waits = [w for e in self._endpoints if (w := e.breaker.retry_in_s(now)) is not None]
        return NoEndpointAvailableError([e.url for e in self._endpoints], min(waits) if waits else None)

    def _emit(self, kind: str, outcome: str, endpoint: str | None = None) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(RoutingEvent(kind, outcome, endpoint))
        except Exception:
            logger.exception("routing event callback failed")


# Which failure to report when every attempt failed: the most informative one.
_ERROR_RANK = {UpstreamStatusError: 4, UpstreamTimeoutError: 3, BrokenStreamError: 2, UpstreamConnectError: 1}


class _Race:
    """One call's attempts: the first try, at most one hedge, failovers; see :class:`Router`."""

    def __init__(self, router: Router, content: bytes, headers: dict[str, str], timeout: httpx.Timeout) -> None:
        self.router = router
        self.content = content
        self.headers = headers
        self.timeout = timeout
        self.tasks: dict[asyncio.Task[RoutedStream], Attempt] = {}
        self.tried: set[Endpoint] = set()
        self.failed: set[Endpoint] = set()
        self.errors: list[UpstreamError] = []
        self.primaries = 0
        self.primary_started = 0.0
        self.hedge_due = router.settings.hedge_delay_s is not None
        self.hedge: Attempt | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when probes mark down the endpoint of an attempt still waiting for its first audio."""
        self.in_line: Attempt | None = None
        """The attempt running in the caller's task (hedging off: :meth:`_run_in_line`)."""
        self._unsubscribe: list[Callable[[], None]] = []

    def launch(self, attempt: Attempt) -> None:
        self._track(attempt)
        task = asyncio.ensure_future(open_attempt(attempt, self.content, self.headers, self.timeout))
        self.tasks[task] = attempt

    def _track(self, attempt: Attempt) -> None:
        if attempt.endpoint not in self.tried:
            self._unsubscribe.append(attempt.endpoint.on_down(self._on_down))
        self.tried.add(attempt.endpoint)
        if not attempt.hedge:
            self.primaries += 1
            self.primary_started = attempt.started

    async def run(self) -> RoutedStream:
        if not self.hedge_due:
            return await self._run_in_line()
        self.launch(self.router._pick_first())
        winner: RoutedStream | None = None
        try:
            while True:
                pending = [t for t in self.tasks if not t.done()]
                if not pending:
                    self._fail_over()
                    continue
                waiting: list[asyncio.Future[Any]] = [*pending, self.lost]
                finished, _ = await asyncio.wait(
                    waiting, timeout=self._hedge_wait(), return_when=asyncio.FIRST_COMPLETED
                )
                if self.lost in finished:
                    await self._drop_lost()
                done = {t for t in pending if t in finished}
                if not done:
                    if self._hedge_wait() == 0.0:
                        self._launch_hedge()
                    continue
                winner = self._settle(done)
                if winner is not None:
                    return winner
        except UpstreamError:
            if self.hedge is not None:
                self.router._emit("hedge", "lost", self.hedge.endpoint.url)
            raise
        finally:
            self._stop_listening()
            await self._cancel_others(winner)

    async def _run_in_line(self) -> RoutedStream:
        """Hedging off: one attempt at a time, in the caller's own task.

        The same failovers as the race, and an attempt whose endpoint probes
        mark down is given up the same way (its failure counted, then the wait
        cut). But no task per attempt and no wait over a set of them: each
        costs the stream a turn of the event loop, before its request goes out
        and again after its first audio.
        """
        attempt = self.router._pick_first()
        try:
            while True:
                self._track(attempt)
                self.in_line = attempt
                try:
                    stream = await run_before(
                        open_attempt(attempt, self.content, self.headers, self.timeout), math.inf, self.lost
                    )
                except Stopped:  # probes marked its endpoint down (``_on_down`` counted the failure)
                    self._failed(attempt.endpoint, _probes_lost(attempt.endpoint))
                    self.lost = asyncio.get_running_loop().create_future()
                except UpstreamError as error:
                    self._failed(attempt.endpoint, error)
                    if isinstance(error, UpstreamStatusError) and error.status < 500:
                        raise  # the request's own fault: no other endpoint would take it
                else:
                    stream.attempts = self.primaries
                    return stream
                attempt = self._next_primary()
        finally:
            self.in_line = None
            self._stop_listening()

    def _stop_listening(self) -> None:
        """Unsubscribe from the endpoints' down events; each subscription refers back to this race,
        so none is kept (no cycle left for the collector)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _failed(self, endpoint: Endpoint, error: UpstreamError) -> None:
        self.failed.add(endpoint)
        self.errors.append(error)

    def _on_down(self, endpoint: Endpoint) -> None:
        attempt = self.in_line
        if attempt is not None:
            # In line, only the attempt running now can be given up. Its failure is counted before
            # the cut reaches it, which would otherwise count it abandoned (no verdict). Should its
            # first audio come in the same turn of the loop, before the cut, it still goes on.
            if endpoint is not attempt.endpoint or attempt.done:
                return
            attempt.finish("failure")
        if not self.lost.done():
            self.lost.set_result(None)

    async def _drop_lost(self) -> None:
        """Give up the attempts whose endpoint probes marked down before any audio: they count as
        that endpoint's failure and the call fails over (a hung worker answers nothing, ever)."""
        self.lost = asyncio.get_running_loop().create_future()
        lost = [(t, a) for t, a in self.tasks.items() if not t.done() and not a.endpoint.healthy]
        for task, attempt in lost:
            attempt.finish("failure")
            task.cancel()
        if lost:
            await asyncio.wait([task for task, _ in lost])
        for _, attempt in lost:
            self._failed(attempt.endpoint, _probes_lost(attempt.endpoint))

    def _hedge_wait(self) -> float | None:
        delay = self.router.settings.hedge_delay_s
        if not self.hedge_due or delay is None:
            return None
        return max(0.0, self.primary_started + delay - self.router._clock())

    def _launch_hedge(self) -> None:
        router = self.router
        self.hedge_due = False
        # The next best endpoint not yet tried; failing that, one still running (the same URL
        # when there is only one: behind a gateway, the backup lands on another worker).
        endpoint = router._choose_next(self.tried) or router._choose_next(self.failed)
        if endpoint is None:
            return
        now = router._clock()
        if not router._hedge_budget.try_spend(now):
            router._counts["hedges_denied"] += 1
            router._emit("hedge", "denied", endpoint.url)
            return
        router._counts["hedges_launched"] += 1
        self.hedge = router._attempt(endpoint, now, hedge=True)
        self.launch(self.hedge)

    def _fail_over(self) -> None:
        """Every attempt failed: launch one more on an untried endpoint, or raise the best error."""
        self.launch(self._next_primary())

    def _next_primary(self) -> Attempt:
        """The failover after every attempt failed, on an untried endpoint; raises the best error if none."""
        router = self.router
        if not self.errors:  # cannot happen: a finished attempt either won or left an error
            raise RuntimeError("routing race ended without a result")
        final = [e for e in self.errors if not e.retryable]
        if final:
            raise final[-1]
        last = self._best_error()
        if self.primaries >= router.settings.max_attempts:
            router._counts["failovers_denied"] += 1
            router._emit("failover", "denied", last.endpoint)
            raise last
        endpoint = router._choose_next(self.tried)
        if endpoint is None:
            raise last
        now = router._clock()
        if not router._retry_budget.try_spend(now):
            router._counts["failovers_denied"] += 1
            router._emit("failover", "denied", endpoint.url)
            raise last
        router._counts["failovers"] += 1
        router._emit("failover", "sent", endpoint.url)
        return router._attempt(endpoint, now, hedge=False)

    def _settle(self, done: set[asyncio.Task[RoutedStream]]) -> RoutedStream | None:
        """The winner among finished attempts, if any; a 4xx (the request's own fault) raises at once."""
        winner: RoutedStream | None = None
        rejected: UpstreamStatusError | None = None
        for task in done:
            error = task.exception()
            if error is None:
                winner = winner or task.result()
            elif isinstance(error, UpstreamError):
                self._failed(self.tasks[task].endpoint, error)
                if isinstance(error, UpstreamStatusError) and error.status < 500:
                    rejected = rejected or error
            else:
                raise error
        if winner is not None:
            self._record_win(winner)
            return winner
        if rejected is not None:
            raise rejected
        return None

    def _record_win(self, winner: RoutedStream) -> None:
        router = self.router
        winner.hedged = self.hedge is not None
        winner.attempts = len(self.tasks)
        if self.hedge is None:
            return
        if winner.is_hedge:
            self.hedge.endpoint.hedges_won += 1
            router._counts["hedges_won"] += 1
            router._emit("hedge", "won", self.hedge.endpoint.url)
        else:
            router._emit("hedge", "lost", self.hedge.endpoint.url)

    def _best_error(self) -> UpstreamError:
        return max(reversed(self.errors), key=lambda e: _ERROR_RANK.get(type(e), 0))

    async def _cancel_others(self, winner: RoutedStream | None) -> None:
        """Cancel every attempt but the winner, closing their connections at once.

        When a race was won, a loser still waiting for its first audio goes on in
        the background for up to ``hedge_loser_wait_ms`` instead (see
        :func:`_measure_loser`): its real latency, not a lower bound, is what
        the scoring learns, so hedging does not make a slow endpoint look faster
        than it is; until then its wait so far is held as a lower bound.
        """
        pending = [t for t in self.tasks if not t.done()]
        wait_s = self.router.settings.hedge_loser_wait_ms / 1000.0
        measured = set(pending) if winner is not None and wait_s > 0 else set()
        for task in pending:
            if task in measured:
                attempt = self.tasks[task]
                attempt.lost()
                attempt.endpoint.run_in_background(_measure_loser(task, attempt), wait_s)
            else:
                task.cancel()
        cancelled = [t for t in pending if t not in measured]
        if cancelled:
            await asyncio.wait(cancelled)
        for task, attempt in self.tasks.items():
            if task in measured:
                continue
            if task.cancelled():
                attempt.abandon()  # a task cancelled before it ran never accounted for itself
                continue
            if task.exception() is None:
                stream = task.result()
                if stream is not winner:
                    attempt.abandon()
                    await stream.close_transport()


def _probes_lost(endpoint: Endpoint) -> UpstreamConnectError:
    """The error of an attempt given up because probes marked its endpoint down before any audio."""
    return UpstreamConnectError(endpoint.url, f"{endpoint.url} stopped answering its health probes before any audio")


async def _measure_loser(task: asyncio.Task[RoutedStream], attempt: Attempt) -> None:
    """Let a hedged race's loser reach its first audio (which records its latency), then close it.

    Run with a time limit: when it runs out, cancelling this cancels the attempt,
    which then records the time it waited as a lower bound.
    """
    try:
        stream = await task
    except UpstreamError:
        return  # its verdict is recorded already
    attempt.abandon()
    await stream.close_transport()
