"""Fair accounting in the routing core: ties, request-caused errors, a hung endpoint and its return."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import httpx

from orpheus_tts.protocol import ChunkFrame, ErrorFrame
from orpheus_tts.routing import BreakerState, Router, RoutingSettings, UpstreamStatusError
from tests.routing.fakes import AUDIO, Upstreams, frames_for, ok, status

NO_HEDGE = RoutingSettings(hedge_ttfb_ms=None, breaker_failure_threshold=2)


async def collect(router: Router) -> bytes:
    return b"".join([f.pcm async for f in router.stream({"text": "x"}) if isinstance(f, ChunkFrame)])


async def test_the_first_request_of_a_new_client_breaks_the_tie_at_random() -> None:
    up = Upstreams({"a": ok(), "b": ok(), "c": ok()})
    first: Counter[str] = Counter()
    for seed in range(60):
        router = Router([up.url(h) for h in "abc"], NO_HEDGE, transport=up.transport, rng=random.Random(seed))
        routed = await router.open({"text": "x"})
        first[routed.endpoint] += 1
        await routed.aclose()
        await router.aclose()
    assert set(first) == {up.url(h) for h in "abc"}, first
    assert min(first.values()) >= 8, first


async def test_request_caused_errors_never_count_against_an_endpoint() -> None:
    bad_input = [*frames_for()[:2], ErrorFrame("invalid_request", "the text cannot be synthesized", False)]
    up = Upstreams({"a": status(400, "invalid_request"), "b": ok(bad_input)})
    router = Router([up.url("a"), up.url("b")], NO_HEDGE, transport=up.transport)
    for _ in range(10):
        try:
            await collect(router)  # b: a prefix, then the invalid_request frame
        except UpstreamStatusError as exc:  # a: refused before audio
            assert exc.status == 400
    for snap in router.snapshots():
        assert (snap.breaker, snap.consecutive_failures, snap.failures) == (BreakerState.CLOSED, 0, 0), snap
    assert sum(up.hits.values()) == 10, "a request-caused error was tried on another endpoint"
    await router.aclose()


async def test_an_attempt_waiting_on_an_endpoint_that_goes_down_fails_over() -> None:
    hung = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        hung.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    up = Upstreams({"a": hang, "b": ok()})
    settings = RoutingSettings(hedge_ttfb_ms=None, read_timeout_s=600.0)
    router = Router([up.url("a"), up.url("b")], settings, transport=up.transport, rng=random.Random(0))
    router.endpoints[1].mark_down()  # the first try goes to the hung one
    call = asyncio.ensure_future(collect(router))
    await asyncio.wait_for(hung.wait(), 5)
    router.endpoints[1].mark_up()
    router.endpoints[0].mark_down()  # what the probes say about a SIGSTOPped worker
    assert await asyncio.wait_for(call, 5) == AUDIO
    assert up.cancelled["a"] == 1
    assert router.endpoints[0].failures == 1
    await router.aclose()


async def test_an_endpoint_back_from_down_is_routed_to_again_at_once() -> None:
    # Each answer takes a moment, as any server's does, so the 20 requests are in flight together:
    # an upstream that answered without ever letting the loop run would serve them one by one.
    up = Upstreams({"a": ok(first_delay_s=0.01), "b": ok(first_delay_s=0.01)})
    router = Router([up.url("a"), up.url("b")], NO_HEDGE, transport=up.transport)
    a = router.endpoints[0]
    now = time.monotonic()
    # What a hung worker leaves behind: stalls penalised as 20 s latencies.
    a.ttfb.observe(20_000.0, now)
    a.mark_down()
    a.mark_up()
    assert a.ttfb.value(now) == RoutingSettings().prior_ttfb_ms
    results = await asyncio.gather(*(collect(router) for _ in range(20)))
    assert all(r == AUDIO for r in results)
    assert up.hits["a"] >= 5, up.hits
    await router.aclose()
