"""Router behaviour against fake v1 upstreams (httpx.MockTransport): choice, failover, breaking, decoding."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from orpheus_tts.protocol import ChunkFrame, EosFrame, ErrorFrame, Frame, MetricsFrame
from orpheus_tts.routing import (
    BreakerState,
    BrokenStreamError,
    Endpoint,
    NoEndpointAvailableError,
    RequestBodyError,
    Router,
    RoutingEvent,
    RoutingSettings,
    UpstreamConnectError,
    UpstreamStatusError,
)
from tests.eventually import eventually
from tests.routing.fakes import (
    AUDIO,
    PIECES,
    Behaviour,
    Upstreams,
    body_of,
    error_frame,
    frames_for,
    ok,
    raw_status,
    refuse,
    status,
)

NO_HEDGE = RoutingSettings(hedge_ttfb_ms=None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def set_ttfb(endpoint: Endpoint, seconds: float) -> None:
    """Give ``endpoint`` a measured time to first audio, now."""
    endpoint.observe_ttfb(seconds, time.monotonic())


async def collect(router: Router, body: dict[str, Any] | None = None, **kw: Any) -> list[Frame]:
    return [f async for f in router.stream(body or {"text": "hi"}, **kw)]


async def collect_into(stream: AsyncIterator[Frame], out: list[Frame]) -> None:
    async for frame in stream:
        out.append(frame)


def pcm_of(frames: list[Frame]) -> bytes:
    return b"".join(f.pcm for f in frames if isinstance(f, ChunkFrame))


@pytest.fixture
async def make_router() -> AsyncIterator[Callable[..., Router]]:
    routers: list[Router] = []

    def make(upstreams: Upstreams, hosts: list[str], settings: RoutingSettings = NO_HEDGE, **kw: Any) -> Router:
        router = Router([Upstreams.url(h) for h in hosts], settings, transport=upstreams.transport, **kw)
        routers.append(router)
        return router

    yield make
    for router in routers:
        await router.aclose()


async def test_streams_frames_in_order_and_passes_body_and_headers(
    make_router: Callable[..., Router],
) -> None:
    up = Upstreams({"a": ok()})
    router = make_router(up, ["a"])
    body = {"text": "Hello", "voice": None, "temperature": 0.4, "custom": {"x": [1, 2]}}
    frames = await collect(router, body, headers={"Authorization": "Bearer k"})
    # Chunks arrive as ChunkLine (a ChunkFrame whose audio is decoded on demand).
    assert [ChunkFrame if isinstance(f, ChunkFrame) else type(f) for f in frames] == [
        MetricsFrame,
        ChunkFrame,
        ChunkFrame,
        ChunkFrame,
        ChunkFrame,
        EosFrame,
    ]
    assert pcm_of(frames) == AUDIO
    assert up.bodies == [body]
    request = up.requests[0]
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers["content-type"] == "application/json"
    assert request.method == "POST"
    assert request.url.path == "/v1/tts/stream"
    snap = router.snapshots()[0]
    assert (snap.requests, snap.failures, snap.inflight) == (1, 0, 0)


async def test_timeout_s_in_the_body_stretches_the_read_timeout(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": ok()})
    router = make_router(up, ["a"])
    await collect(router, {"text": "x", "timeout_s": 200})
    await collect(router, {"text": "x"})
    reads = [r.extensions["timeout"]["read"] for r in up.requests]
    assert reads == [200 + NO_HEDGE.deadline_grace_s, NO_HEDGE.read_timeout_s]


async def test_4xx_is_raised_with_code_and_message_and_never_failed_over(
    make_router: Callable[..., Router],
) -> None:
    up = Upstreams(
        {
            "a": status(404, "unknown_voice", "no voice 'zz'"),
            "b": status(404, "unknown_voice", "no voice 'zz'"),
        }
    )
    router = make_router(up, ["a", "b"])
    with pytest.raises(UpstreamStatusError) as info:
        await collect(router)
    assert (info.value.status, info.value.code, info.value.message) == (404, "unknown_voice", "no voice 'zz'")
    assert not info.value.retryable
    assert sum(up.hits.values()) == 1
    assert all(s.failures == 0 and s.breaker is BreakerState.CLOSED for s in router.snapshots())


@pytest.mark.parametrize(("code", "error_code"), [(500, "engine_error"), (502, "worker_lost"), (503, "overloaded")])
async def test_5xx_fails_over_to_another_endpoint(
    make_router: Callable[..., Router], code: int, error_code: str
) -> None:
    events: list[RoutingEvent] = []
    up = Upstreams({"bad": status(code, error_code, headers={"Retry-After": "2"}), "good": ok()})
    router = make_router(up, ["bad", "good"], on_event=events.append)
    set_ttfb(router.endpoints[1], 5.0)  # make "bad" look better, so it is tried first
    frames = await collect(router)
    assert pcm_of(frames) == AUDIO
    assert up.hits == {"bad": 1, "good": 1}
    assert router.stats().failovers == 1
    assert RoutingEvent("failover", "sent", "http://good") in events
    bad = router.snapshots()[0]
    assert bad.failures == (0 if code == 503 else 1), "overload is a load signal, not a fault"


async def test_503_demotes_the_endpoint_for_its_retry_after(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"busy": status(503, "overloaded", headers={"Retry-After": "30"}), "idle": ok()})
    router = make_router(up, ["busy", "idle"])
    set_ttfb(router.endpoints[1], 5.0)
    await collect(router)
    up.behaviours["busy"] = ok()
    for _ in range(5):
        await collect(router)
    assert up.hits == {"busy": 1, "idle": 6}


async def test_504_is_final(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": status(504, "deadline_exceeded"), "b": ok()})
    router = make_router(up, ["a", "b"])
    set_ttfb(router.endpoints[1], 5.0)
    with pytest.raises(UpstreamStatusError) as info:
        await collect(router)
    assert info.value.status == 504
    assert up.hits == {"a": 1}


async def test_a_non_json_error_body_still_gives_code_and_message(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": raw_status(502, "<html>Bad Gateway</html>")})
    router = make_router(up, ["a"])
    with pytest.raises(UpstreamStatusError) as info:
        await collect(router)
    assert (info.value.status, info.value.code) == (502, "worker_lost")
    assert "Bad Gateway" in info.value.message


async def test_failover_is_bounded_by_max_attempts(make_router: Callable[..., Router]) -> None:
    up = Upstreams({h: refuse() for h in "abcd"})
    router = make_router(up, list("abcd"), RoutingSettings(hedge_ttfb_ms=None, max_attempts=2))
    with pytest.raises(UpstreamConnectError):
        await collect(router)
    assert sum(up.hits.values()) == 2
    assert router.stats().failovers_denied == 1


async def test_failover_is_bounded_by_the_retry_budget(make_router: Callable[..., Router]) -> None:
    settings = RoutingSettings(hedge_ttfb_ms=None, retry_budget_ratio=0.0, retry_budget_reserve=1)
    up = Upstreams({"a": refuse(), "b": refuse(), "c": refuse()})
    router = make_router(up, ["a", "b", "c"], settings)
    with pytest.raises(UpstreamConnectError):
        await collect(router)
    assert sum(up.hits.values()) == 2, "the reserve allows one failover in the window"
    with pytest.raises(UpstreamConnectError):
        await collect(router)
    assert sum(up.hits.values()) == 3, "then none"


async def test_the_most_informative_error_is_reported(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": status(503, "overloaded", headers={"Retry-After": "3"}), "b": refuse()})
    router = make_router(up, ["a", "b"])
    set_ttfb(router.endpoints[1], 1000.0)
    with pytest.raises(UpstreamStatusError) as info:
        await collect(router)
    assert (info.value.status, info.value.retry_after_s) == (503, 3.0)


async def test_breaker_opens_after_consecutive_failures_then_fails_fast(
    make_router: Callable[..., Router],
) -> None:
    clock = FakeClock()
    settings = RoutingSettings(hedge_ttfb_ms=None, breaker_failure_threshold=3, breaker_cooldown_s=10.0)
    up = Upstreams({"a": refuse()})
    router = make_router(up, ["a"], settings, clock=clock)
    for _ in range(3):
        with pytest.raises(UpstreamConnectError):
            await collect(router)
    assert router.snapshots()[0].breaker is BreakerState.OPEN
    with pytest.raises(NoEndpointAvailableError, match=r"^Circuit open for endpoint http://a"):
        await collect(router)
    assert up.hits["a"] == 3, "an open circuit sends nothing"
    clock.now += 10.0
    up.behaviours["a"] = ok()
    assert pcm_of(await collect(router)) == AUDIO
    assert router.snapshots()[0].breaker is BreakerState.CLOSED


async def test_a_half_open_endpoint_gets_the_next_request_as_its_probe(
    make_router: Callable[..., Router],
) -> None:
    clock = FakeClock()
    settings = RoutingSettings(hedge_ttfb_ms=None, breaker_failure_threshold=1, breaker_cooldown_s=5.0)
    up = Upstreams({"sick": refuse(), "well": ok()})
    router = make_router(up, ["sick", "well"], settings, clock=clock)
    router.endpoints[1].observe_ttfb(10.0, clock.now)
    router.endpoints[0].observe_ttfb(1.0, clock.now)
    await collect(router)  # sick refuses, opens; failover to well
    for _ in range(3):
        await collect(router)
    assert up.hits == {"sick": 1, "well": 4}
    clock.now += 5.0
    up.behaviours["sick"] = ok()
    await collect(router)
    assert up.hits["sick"] == 2
    assert router.snapshots()[0].breaker is BreakerState.CLOSED


async def test_a_body_cut_after_audio_raises_and_is_not_replayed(make_router: Callable[..., Router]) -> None:
    truncated = frames_for()[:3]  # metrics + 2 chunks, no eos
    up = Upstreams({"a": ok(truncated), "b": ok()})
    router = make_router(up, ["a", "b"])
    set_ttfb(router.endpoints[1], 5.0)
    received: list[Frame] = []
    with pytest.raises(BrokenStreamError, match="ended without eos after 2 chunks"):
        await collect_into(router.stream({"text": "x"}), received)
    assert pcm_of(received) == PIECES[0] + PIECES[1]
    assert up.hits == {"a": 1}, "nothing is replayed after audio"
    assert router.snapshots()[0].failures == 1


async def test_a_body_that_ends_before_any_audio_fails_over(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": ok(frames_for()[:1]), "b": ok()})
    router = make_router(up, ["a", "b"])
    set_ttfb(router.endpoints[1], 5.0)
    assert pcm_of(await collect(router)) == AUDIO
    assert up.hits == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("tail", "match"),
    [(b"{not json\n", "malformed"), (b'{"type":"chunk","seq":7,"audio":"AAAAAA=="}\n', "seq 7")],
)
async def test_protocol_violations_are_broken_streams(
    make_router: Callable[..., Router], tail: bytes, match: str
) -> None:
    up = Upstreams({"a": ok(frames_for()[:2], raw_tail=tail)})
    router = make_router(up, ["a"])
    with pytest.raises(BrokenStreamError, match=match):
        await collect(router)


async def test_error_frames_are_yielded_and_engine_errors_count_against_the_endpoint(
    make_router: Callable[..., Router],
) -> None:
    up = Upstreams({"a": error_frame("engine_error"), "b": error_frame("deadline_exceeded")})
    router = make_router(up, ["a", "b"])
    set_ttfb(router.endpoints[1], 9.0)
    frames = await collect(router)
    assert isinstance(frames[-1], ErrorFrame)
    assert frames[-1].code == "engine_error"
    assert pcm_of(frames) == PIECES[0] + PIECES[1]
    assert up.hits == {"a": 1}
    set_ttfb(router.endpoints[0], 99.0)
    frames = await collect(router)
    assert isinstance(frames[-1], ErrorFrame)
    assert frames[-1].code == "deadline_exceeded"
    assert [s.failures for s in router.snapshots()] == [1, 0]


async def test_trailing_bytes_after_eos_are_ignored(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": ok(raw_tail=b'{"type":"chunk","seq":0,"audio":""}\n')})
    router = make_router(up, ["a"])
    assert pcm_of(await collect(router)) == AUDIO


async def test_queue_hints_from_headers_and_metrics_steer_traffic(make_router: Callable[..., Router]) -> None:
    up = Upstreams(
        {
            "deep": ok(frames_for(queue_depth=40, inflight=4), headers={"X-Queue-Depth": "40", "X-Inflight": "4"}),
            "shallow": ok(headers={"X-Queue-Depth": "0"}),
        }
    )
    router = make_router(up, ["deep", "shallow"])
    set_ttfb(router.endpoints[0], 0.01)  # "deep" looks fastest until it reports its queue
    set_ttfb(router.endpoints[1], 0.05)
    await collect(router)
    assert up.hits == {"deep": 1}
    deep = router.snapshots()[0]
    assert deep.queue_hint > 30
    assert deep.server_inflight == 4
    for _ in range(20):
        await collect(router)
    assert up.hits["deep"] <= 2, f"traffic should avoid the deep queue: {dict(up.hits)}"
    assert up.hits["shallow"] >= 20


async def test_abandoning_a_stream_frees_the_endpoint_without_a_verdict(
    make_router: Callable[..., Router],
) -> None:
    up = Upstreams({"a": ok(piece_delay_s=0.01)})
    router = make_router(up, ["a"])
    stream = router.stream({"text": "x"})
    async for frame in stream:
        if isinstance(frame, ChunkFrame):
            break
    await stream.aclose()
    snap = router.snapshots()[0]
    assert (snap.inflight, snap.failures, snap.consecutive_failures) == (0, 0, 0)


async def test_hedge_wins_when_the_primary_is_slow_and_the_primary_is_cancelled(
    make_router: Callable[..., Router],
) -> None:
    events: list[RoutingEvent] = []
    up = Upstreams({"slow": ok(first_delay_s=5.0), "fast": ok()})
    settings = RoutingSettings(hedge_ttfb_ms=50, hedge_loser_wait_ms=0)  # losers cancelled at once
    router = make_router(up, ["slow", "fast"], settings, on_event=events.append)
    set_ttfb(router.endpoints[1], 1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    frames = await collect(router)
    assert loop.time() - started < 2.0
    assert pcm_of(frames) == AUDIO, "exactly one copy of the audio"
    assert up.cancelled["slow"] == 1
    stats = router.stats()
    assert (stats.hedges_launched, stats.hedges_won) == (1, 1)
    assert RoutingEvent("hedge", "won", "http://fast") in events
    slow, fast = router.snapshots()
    assert slow.inflight == 0
    assert slow.failures == 0
    assert slow.ttfb_ewma_ms >= 50, "the loser's wait is counted as a lower bound on its latency"
    assert (fast.hedges_sent, fast.hedges_won) == (1, 1)


async def test_a_hedged_race_measures_its_loser_before_closing_it(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"slow": ok(first_delay_s=0.4), "fast": ok()})
    router = make_router(up, ["slow", "fast"], RoutingSettings(hedge_ttfb_ms=50, hedge_loser_wait_ms=5000))
    set_ttfb(router.endpoints[1], 1.0)
    frames = await collect(router)
    assert pcm_of(frames) == AUDIO, "the winner's audio, once"
    assert router.stats().hedges_won == 1
    slow = router.endpoints[0]
    assert slow.inflight == 1, "the loser goes on until its first audio"
    assert await eventually(lambda: slow.inflight == 0)
    snap = router.snapshots()[0]
    assert snap.ttfb_ewma_ms >= 400, "its real latency, not the ~50 ms it had waited when the race ended"
    assert (snap.failures, snap.consecutive_failures) == (0, 0)
    assert slow.ttfb.floor_ms == 0.0, "a real sample, not a lower bound"


async def test_a_loser_still_being_measured_is_not_chosen_again_meanwhile(make_router: Callable[..., Router]) -> None:
    # The slow endpoint looks fastest, so it is the primary; the hedge wins at ~50 ms while the
    # loser goes on to its first audio at 400 ms. Until then it counts as at least as slow as it
    # had waited when the race ended: the next request goes to the winner, not back to the loser.
    up = Upstreams({"slow": ok(first_delay_s=0.4), "fast": ok()})
    router = make_router(up, ["slow", "fast"], RoutingSettings(hedge_ttfb_ms=50, hedge_loser_wait_ms=5000))
    slow, fast = router.endpoints
    set_ttfb(slow, 0.005)
    set_ttfb(fast, 0.02)
    assert pcm_of(await collect(router)) == AUDIO
    assert (router.stats().hedges_won, slow.inflight) == (1, 1)
    assert slow.ttfb.floor_ms >= 50, "held at its wait so far while its real latency is measured"
    assert pcm_of(await collect(router)) == AUDIO
    assert (up.hits["slow"], up.hits["fast"]) == (1, 2)
    assert await eventually(lambda: slow.inflight == 0)
    assert slow.ttfb.floor_ms == 0.0, "its real sample replaced the floor"


async def test_a_loser_past_its_wait_is_cancelled_and_counted_as_at_least_that_slow(
    make_router: Callable[..., Router],
) -> None:
    up = Upstreams({"slow": ok(first_delay_s=30.0), "fast": ok()})
    router = make_router(up, ["slow", "fast"], RoutingSettings(hedge_ttfb_ms=50, hedge_loser_wait_ms=200))
    set_ttfb(router.endpoints[1], 1.0)
    await collect(router)
    slow = router.endpoints[0]
    assert await eventually(lambda: slow.inflight == 0)
    assert await eventually(lambda: up.cancelled["slow"] == 1)
    assert slow.ttfb.floor_ms >= 200, "held as a lower bound until a real sample"


async def test_hedges_respect_their_budget(make_router: Callable[..., Router]) -> None:
    settings = RoutingSettings(hedge_ttfb_ms=20, hedge_budget_ratio=0.0, hedge_budget_reserve=0)
    up = Upstreams({"a": ok(first_delay_s=0.1), "b": ok(first_delay_s=0.1)})
    router = make_router(up, ["a", "b"], settings)
    await collect(router)
    assert sum(up.hits.values()) == 1
    assert router.stats().hedges_denied == 1


async def test_a_single_endpoint_is_hedged_onto_itself(make_router: Callable[..., Router]) -> None:
    calls = 0

    async def first_slow(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return await ok(first_delay_s=5.0 if calls == 1 else 0.0)(request)

    up = Upstreams({"gw": first_slow})
    router = make_router(up, ["gw"], RoutingSettings(hedge_ttfb_ms=30, hedge_loser_wait_ms=100))
    assert pcm_of(await collect(router)) == AUDIO
    assert up.hits["gw"] == 2
    assert await eventually(lambda: up.cancelled["gw"] == 1), "the loser is closed once its wait ran out"


async def test_probe_marks_endpoints_down_and_up(make_router: Callable[..., Router]) -> None:
    ready = False

    async def behave(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200 if ready else 503, json={})
        return await ok()(request)

    up = Upstreams({"a": behave})
    router = make_router(up, ["a"])
    assert await router.probe_all() == {"http://a": False}
    assert not router.snapshots()[0].healthy
    with pytest.raises(NoEndpointAvailableError):
        await collect(router)
    ready = True
    assert await router.endpoints[0].probe()
    assert pcm_of(await collect(router)) == AUDIO


async def test_an_endpoint_back_from_down_starts_from_the_fleet_median_as_it_turns_healthy(
    make_router: Callable[..., Router],
) -> None:
    """The median is its start from the moment it is healthy again, not once every probe of the round
    has answered: a request routed in between would see the estimate it had before."""
    a_ready = False
    b_answers = asyncio.Event()

    async def a(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200 if a_ready else 503, json={})
        return await ok()(request)

    async def b(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            await b_answers.wait()  # this round's other probe is slow
            return httpx.Response(200, json={})
        return await ok()(request)

    router = make_router(Upstreams({"a": a, "b": b}), ["a", "b"])
    back, other = router.endpoints
    set_ttfb(back, 2.0)  # what it learnt before it went down
    set_ttfb(other, 0.05)
    b_answers.set()
    await router.probe_all()
    assert not back.healthy
    a_ready, b_answers = True, asyncio.Event()
    probing = asyncio.ensure_future(router.probe_all())
    try:
        assert await eventually(lambda: back.healthy)
        assert not probing.done(), "the other probe is still out"
        assert back.ttfb.value(time.monotonic()) == pytest.approx(50.0, rel=0.01)
    finally:
        b_answers.set()
        await probing


async def test_endpoints_can_be_added_and_removed(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": ok(), "b": ok()})
    router = make_router(up, ["a"])
    set_ttfb(router.endpoints[0], 0.123)
    added = router.add_endpoint("http://b/")
    assert added.url == "http://b"
    assert added.ttfb.prior_ms == pytest.approx(123.0, rel=0.01), "a new endpoint starts from the fleet median"
    with pytest.raises(ValueError, match="already"):
        router.add_endpoint("http://b")
    removed = router.remove_endpoint("http://a")
    await removed.aclose()
    await collect(router)
    assert up.hits == {"b": 1}


async def test_bad_bodies_and_urls_are_rejected_clearly(make_router: Callable[..., Router]) -> None:
    up = Upstreams({"a": ok()})
    router = make_router(up, ["a"])
    with pytest.raises(RequestBodyError, match="JSON"):
        await collect(router, {"text": "x", "blob": b"bytes"})
    with pytest.raises(ValueError, match="http"):
        Router(["ftp://nowhere"])
    assert body_of([]) == b""


async def test_a_failure_sends_traffic_elsewhere_before_the_circuit_opens(
    make_router: Callable[..., Router],
) -> None:
    up = Upstreams({"flaky": refuse(), "steady": ok()})
    router = make_router(up, ["flaky", "steady"])
    set_ttfb(router.endpoints[0], 0.01)
    set_ttfb(router.endpoints[1], 0.02)
    for _ in range(10):
        await collect(router)
    assert up.hits == {"flaky": 1, "steady": 10}
    flaky = router.snapshots()[0]
    assert flaky.breaker is BreakerState.CLOSED
    assert flaky.ttfb_ewma_ms >= NO_HEDGE.failure_penalty_ms * 0.9


def in_task(behaviour: Behaviour, seen: list[asyncio.Task[Any] | None]) -> Behaviour:
    """``behaviour``, noting the task each request is served in (a mock transport serves it in the caller's)."""

    async def behave(request: httpx.Request) -> httpx.Response:
        seen.append(asyncio.current_task())
        return await behaviour(request)

    return behave


async def test_without_hedging_every_attempt_runs_in_the_callers_own_task() -> None:
    """No task per attempt when there is no race to run: each would cost the stream a turn of the
    event loop before its request goes out and another after its first audio. A failover too."""
    seen: list[asyncio.Task[Any] | None] = []
    fail, succeed = status(500, "internal"), ok()

    async def first_fails(request: httpx.Request) -> httpx.Response:  # whichever endpoint is picked first
        return await (fail if not seen[:-1] else succeed)(request)

    up = Upstreams({"a": in_task(first_fails, seen), "b": in_task(first_fails, seen)})
    router = Router([up.url("a"), up.url("b")], NO_HEDGE, transport=up.transport)
    routed = await router.open({"text": "hi"})
    frames = [frame async for frame in routed]
    assert pcm_of(frames) == AUDIO
    assert routed.attempts == 2
    assert seen == [asyncio.current_task()] * 2
    await router.aclose()


async def test_with_hedging_the_attempts_race_in_tasks_of_their_own() -> None:
    seen: list[asyncio.Task[Any] | None] = []
    up = Upstreams({"a": in_task(ok(), seen)})
    router = Router([up.url("a")], RoutingSettings(hedge_ttfb_ms=500), transport=up.transport)
    assert pcm_of(await collect(router)) == AUDIO
    assert len(seen) == 1
    assert seen[0] is not asyncio.current_task()
    await router.aclose()


async def test_without_hedging_an_endpoint_tried_before_going_down_does_not_cut_the_failover() -> None:
    seen: list[asyncio.Task[Any] | None] = []
    fail, slow = status(500, "internal"), ok(first_delay_s=0.3)

    async def first_fails(request: httpx.Request) -> httpx.Response:
        return await (fail if not seen[:-1] else slow)(request)

    up = Upstreams({"a": in_task(first_fails, seen), "b": in_task(first_fails, seen)})
    router = Router([up.url("a"), up.url("b")], NO_HEDGE, transport=up.transport)
    opening = asyncio.ensure_future(router.open({"text": "hi"}))
    assert await eventually(lambda: len(seen) == 2)  # the failover is waiting for its answer
    first_host = up.requests[0].url.host
    first = next(e for e in router.endpoints if e.url == up.url(first_host))
    first.mark_down()  # the endpoint that failed first: nothing to do with the attempt running now
    routed = await opening
    assert pcm_of([frame async for frame in routed]) == AUDIO
    assert routed.attempts == 2
    await router.aclose()
