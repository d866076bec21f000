"""Fair accounting at the gateway: outcomes counted as they happened, quotas spent only by real work,
and credentials that cannot be ambiguous."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.keys import KeyLimits, sha256_hex
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually
from tests.servers import run_server

KEY = "sk-accounting-0123456789"
RATE_LIMIT = 4
HANG_GUARD_S = 30.0
ROUTES = {"v1": "/v1/tts/stream", "openai": "/v1/audio/speech"}


def body(route: str, text: str = "Hello there.", **params: Any) -> dict[str, Any]:
    if route == "v1":
        return {"text": text, "voice": "tone", **params}
    return {"model": "tts-1", "input": text, "voice": "tone", "response_format": "pcm", **params}


@pytest.fixture
def worker() -> Iterator[str]:
    with run_server(create_worker(ToneEngine(capacity=4, faults=True), WorkerConfig())) as url:
        yield url


@pytest.fixture
def open_gateway(worker: str) -> Iterator[str]:
    with run_server(create_gateway(GatewayConfig(workers=(worker,), probe_interval_s=0.2))) as url:
        yield url


@pytest.fixture
def keyed_gateway(worker: str) -> Iterator[str]:
    auth = Authenticator([("tenant", sha256_hex(KEY), KeyLimits(requests_per_minute=RATE_LIMIT))])
    with run_server(create_gateway(GatewayConfig(workers=(worker,), probe_interval_s=0.2), auth)) as url:
        yield url


def outcomes(gateway: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{gateway}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "orpheus_requests_total" and sample.labels.get("role") == "gateway":
                counts[sample.labels["outcome"]] += int(sample.value)
    return counts


def changed(gateway: str, before: Counter[str]) -> Callable[[], bool]:
    return lambda: outcomes(gateway) != before


@pytest.mark.parametrize("route", list(ROUTES))
async def test_each_outcome_is_counted_once_as_what_happened(open_gateway: str, route: str) -> None:
    path = ROUTES[route]
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("ok", body(route), 200),
        ("invalid_request", body(route, "Bad \u0000 text."), 400),
        ("unknown_voice", {**body(route), "voice": "nobody"}, 404),
        ("deadline_exceeded", body(route, timeout_s=0.3, fault_first_delay_ms=5_000), 504),
        ("engine_error", body(route, "One. Two. Three.", fault_error_after=1), 200),
    ]
    async with httpx.AsyncClient(base_url=open_gateway, timeout=HANG_GUARD_S) as client:
        for outcome, request, status in cases:
            before = outcomes(open_gateway)
            cut = route == "openai" and outcome == "engine_error"  # raw audio: the response is cut short
            with pytest.raises(httpx.RemoteProtocolError) if cut else contextlib.nullcontext():
                response = await client.post(path, json=request)
                assert response.status_code == status, (outcome, response.text[:200])
            assert await eventually(changed(open_gateway, before)), outcome
            assert outcomes(open_gateway) - before == Counter({outcome: 1}), outcome
        before = outcomes(open_gateway)
        long = body(route, "A long one. " * 20, fault_piece_delay_ms=100)
        async with client.stream("POST", path, json=long) as response:
            assert response.status_code == 200
            await response.aiter_bytes().__anext__()
        assert await eventually(lambda: outcomes(open_gateway) != before)
        assert outcomes(open_gateway) - before == Counter({"cancelled": 1})


async def test_refused_requests_do_not_use_up_the_rate_quota(keyed_gateway: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=keyed_gateway, timeout=HANG_GUARD_S, headers=auth) as client:
        for route, path in ROUTES.items():
            refusals = [
                ({**body(route), "voice": "nobody"}, 404),
                (body(route, bogus_parameter=1), 400),
                (body(route, timeout_s=0.3, fault_first_delay_ms=5_000), 504),
            ]
            for request, status in refusals * 2:
                response = await client.post(path, json=request)
                assert response.status_code == status, response.text[:200]
        # A failure on the servers' side counts: the work was done on the key's behalf.
        failed = await client.post("/v1/tts/stream", json=body("v1", fault_error_after=0))
        assert failed.status_code == 500
        statuses = [(await client.post(ROUTES[r], json=body(r))).status_code for r in ("v1", "openai", "v1")]
        assert statuses == [200, 200, 200]
        over = await client.post("/v1/tts/stream", json=body("v1"))
        assert over.status_code == 429, over.text
        assert over.json()["error"]["code"] == "rate_limited"


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(
    "headers",
    [
        [("authorization", f"Bearer {KEY}"), ("authorization", "Bearer sk-someone-else")],
        [("x-api-key", "sk-someone-else"), ("x-api-key", KEY)],
        [("authorization", f"Bearer {KEY}"), ("authorization", f"Bearer {KEY}")],
    ],
)
async def test_a_credential_sent_twice_is_a_400(keyed_gateway: str, route: str, headers: list[tuple[str, str]]) -> None:
    async with httpx.AsyncClient(base_url=keyed_gateway, timeout=HANG_GUARD_S) as client:
        response = await client.post(ROUTES[route], json=body(route), headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_request"
        assert KEY not in response.text
        once = await client.post(ROUTES[route], json=body(route), headers=headers[1:])
        assert once.status_code in (200, 401)
