"""A full circuit-breaker cycle through the gateway: eject a failing worker, keep it out, readmit it.

The failing worker refuses connections (a fault proxy that resets every
connection). Health probes and the load score's own defences are kept out of
the way, so the router's breaker does the work: consecutive failures open the circuit (visible in
``/v1/system`` and ``orpheus_circuit_open``), an open circuit takes no
traffic, and once the worker is back and the cooldown is over exactly one
request goes to it as the probe; its success closes the circuit.
"""

from __future__ import annotations

import asyncio
import subprocess

from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import HTTPStatusError, OrpheusTTS
from tests.eventually import eventually
from tests.faultproxy import Faults, fault_proxy
from tests.reliability.harness import (
    COMPLETE,
    Received,
    metric,
    routed_gateway,
    sdk_stream,
    tally,
    workers_by_url,
)

FAILURE_THRESHOLD = 3
COOLDOWN_S = 1.0
NO_PROBES_S = 600.0
FAIL_FAST_S = 0.5
ROUTING = RoutingSettings(
    hedge_ttfb_ms=None,
    breaker_failure_threshold=FAILURE_THRESHOLD,
    breaker_cooldown_s=COOLDOWN_S,
    # By default load scoring steers traffic away after one failure (a failure counts as 2 s to first
    # audio, and an endpoint never measured keeps the 250 ms prior, far above a busy worker's few ms).
    # Made negligible, they leave every pick to the breaker, the mechanism under test.
    failure_penalty_ms=1.0,
    prior_ttfb_ms=1.0,
)


async def test_a_refusing_worker_is_ejected_kept_out_and_readmitted_by_one_probe(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    (flaky_url, _), (steady_url, _) = worker_pair
    with fault_proxy(flaky_url, Faults()) as proxy:
        with routed_gateway([proxy.url, steady_url], ROUTING, probe_interval_s=NO_PROBES_S) as (gw, _):

            def breaker() -> str:
                return str(workers_by_url(gw)[proxy.url]["breaker"])

            assert breaker() == "closed"
            proxy.faults.refuse = True  # new connections are reset at once,
            proxy.faults.reset_after_bytes = 0  # and so is the kept-alive one of the start-up probe
            results: list[Received] = []
            async with OrpheusTTS(gw, hedge_ttfb_ms=None) as tts:
                # 1. Ejected: concurrent waves keep the steady worker busy, so the flaky one keeps being picked.
                for wave in range(10):
                    texts = [f"Wave {wave}, stream {i}: failover hides the refusal." for i in range(4)]
                    results += await asyncio.gather(*(sdk_stream(tts, t) for t in texts))
                    if breaker() == "open":
                        break
                assert breaker() == "open"
                assert metric(gw, "orpheus_circuit_open", endpoint=proxy.url) == 1
                assert workers_by_url(gw)[proxy.url]["circuit_opens"] == 1

                # 2. Open: no request reaches it, the others are served.
                refused_connections = proxy.connections
                results += await asyncio.gather(*(sdk_stream(tts, f"While open, stream {i}.") for i in range(6)))
                assert proxy.connections == refused_connections, "an open circuit took traffic"

                # 3. Recovered: after the cooldown, one request is the probe, and it closes the circuit.
                proxy.faults.refuse = False
                proxy.faults.reset_after_bytes = None
                assert await eventually(lambda: breaker() == "half_open", within_s=COOLDOWN_S + 2)
                served_before = metric(flaky_url, "orpheus_requests_total", outcome="ok")
                results.append(await sdk_stream(tts, "The probe goes to the recovered worker."))
                assert metric(flaky_url, "orpheus_requests_total", outcome="ok") - served_before == 1
                assert breaker() == "closed"
                assert metric(gw, "orpheus_circuit_open", endpoint=proxy.url) == 0
    assert tally(results)[COMPLETE] == len(results), "clients never saw the failing worker"


async def test_with_no_healthy_worker_left_clients_fail_fast_and_the_probe_restores_service(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    """The only worker fails: clients get 503 ``no_workers`` with ``Retry-After`` (at once while the
    circuit is open, never a hang), and service comes back through one probe."""
    routing = RoutingSettings(hedge_ttfb_ms=None, breaker_failure_threshold=FAILURE_THRESHOLD, breaker_cooldown_s=2.0)
    with fault_proxy(worker_pair[0][0], Faults()) as proxy:
        with routed_gateway([proxy.url], routing, probe_interval_s=NO_PROBES_S) as (gw, _):
            proxy.faults.refuse = True
            proxy.faults.reset_after_bytes = 0
            async with OrpheusTTS(gw, hedge_ttfb_ms=None) as tts:
                failing = [await sdk_stream(tts, f"Attempt {i}.") for i in range(FAILURE_THRESHOLD)]
                assert workers_by_url(gw)[proxy.url]["breaker"] == "open"
                connections = proxy.connections
                fast = await asyncio.gather(*(sdk_stream(tts, f"While open {i}.") for i in range(5)))
                assert proxy.connections == connections
                proxy.faults.refuse = False
                proxy.faults.reset_after_bytes = None
                assert await eventually(lambda: workers_by_url(gw)[proxy.url]["breaker"] == "half_open", within_s=4)
                back = await sdk_stream(tts, "Service is back.")
                assert workers_by_url(gw)[proxy.url]["breaker"] == "closed"
    assert tally([*failing, *fast], refused=["no_workers"])[COMPLETE] == 0
    for r in [*failing, *fast]:
        assert isinstance(r.error, HTTPStatusError)
        assert r.error.status_code == 503
        assert r.error.retry_after_s is not None
        assert r.error.retry_after_s >= 1
    assert max(r.elapsed_s for r in fast) < FAIL_FAST_S, "an open circuit answers at once"
    assert tally([back])[COMPLETE] == 1
