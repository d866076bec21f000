"""Poison input is the request's fault: a 400 at validation, on every route, and no breaker moves.

Each body below once reached an engine or an encoder and came back as a 5xx
that the gateway counted against a worker (and retried on the next one), until
every circuit was open and every tenant got ``no_workers``; the SDK's own
breaker opened against a healthy gateway. Now each is refused up front, names
the field at fault, and leaves every breaker closed with no failure counted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from orpheus_tts.engines.base import EngineInputError
from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import HTTPStatusError, InvalidRequestError, OrpheusTTS, StreamError
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.servers import run_server

REPEATS = 6
"""More than the breaker's failure threshold (5): had any counted, a circuit would be open."""

POISON_TEXTS = {
    "nul": "Hello\u0000world.",
    "lone high surrogate": "Hello \ud800 world.",
    "lone low surrogate": "Hello \udfff world.",
    "bell": "Ring \u0007 ring.",
    "escape": "Colour \u001b[31m red.",
    "delete": "Del \u007f ete.",
    "c1 control": "Next \u0085 line.",
    "noncharacter": "Not \ufffe a character.",
    "plane noncharacter": "Not \U0010ffff either.",
}
"""Texts no engine can speak: controls other than tab and newlines, unpaired surrogates, noncharacters."""

NUMBERS = {"nan": "NaN", "infinity": "Infinity", "minus infinity": "-Infinity", "overflow": "1e400"}
"""Numbers Python's JSON decoder accepts that are not finite."""

DEEP = "[" * 5000 + "]" * 5000
"""5,000 levels of nesting, about 10 KB."""


def v1_body(text: str = "Hello there.", raw_params: str = "") -> bytes:
    return ('{"text": ' + json.dumps(text) + raw_params + "}").encode()


def openai_body(text: str = "Hello there.", raw_params: str = "") -> bytes:
    return ('{"model": "tts-1", "response_format": "pcm", "input": ' + json.dumps(text) + raw_params + "}").encode()


def poison_bodies(route: str) -> dict[str, bytes]:
    body = v1_body if route == "v1" else openai_body
    bodies = {f"text: {name}": body(text) for name, text in POISON_TEXTS.items()}
    for name, literal in NUMBERS.items():
        bodies[f"temperature: {name}"] = body(raw_params=f', "temperature": {literal}')
        bodies[f"timeout_s: {name}"] = body(raw_params=f', "timeout_s": {literal}')
    bodies["huge integer"] = body(raw_params=', "top_k": ' + "9" * 400)
    bodies["deep nesting"] = body(raw_params=f', "temperature": {DEEP}')
    return bodies


class InputFailingEngine(ToneEngine):
    """Says the first piece of any text holding ``[bad]``, then fails as the input's fault."""

    async def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        emitted = 0
        async for piece in super().synthesize(text, voice, params):
            if "[bad]" in text and emitted == 1:
                raise EngineInputError("the tag [bad] cannot be spoken")
            emitted += 1
            yield piece


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """Two workers (one whose engine can fail on its input mid-stream) and a gateway in front."""
    with (
        run_server(create_worker(InputFailingEngine(capacity=4), WorkerConfig())) as w1,
        run_server(create_worker(InputFailingEngine(capacity=4), WorkerConfig())) as w2,
    ):
        config = GatewayConfig(workers=(w1, w2), probe_interval_s=0.2)
        with run_server(create_gateway(config, routing=RoutingSettings(hedge_ttfb_ms=None))) as gw:
            yield {"worker": w1, "gateway": gw}


def all_breakers_closed(gateway: str) -> None:
    for worker in httpx.get(f"{gateway}/v1/system", timeout=5).json()["workers"]:
        assert worker["breaker"] == "closed", worker
        assert worker["consecutive_failures"] == 0, worker
        assert worker["failures"] == 0, worker
        assert worker["circuit_opens"] == 0, worker


def failovers(gateway: str) -> float:
    for line in httpx.get(f"{gateway}/metrics", timeout=5).text.splitlines():
        if line.startswith("orpheus_failovers_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize(("target", "route"), [("worker", "v1"), ("gateway", "v1"), ("gateway", "openai")])
def test_every_poison_input_is_a_400_naming_the_field(stack: dict[str, str], target: str, route: str) -> None:
    path = "/v1/tts/stream" if route == "v1" else "/v1/audio/speech"
    before = failovers(stack["gateway"])
    with httpx.Client(base_url=stack[target], timeout=10) as client:
        for name, body in poison_bodies(route).items():
            for _ in range(REPEATS if target == "gateway" else 1):
                response = client.post(path, content=body, headers={"content-type": "application/json"})
                assert response.status_code == 400, (name, response.status_code, response.text[:300])
                error = response.json()["error"]
                assert error["code"] == "invalid_request", (name, error)
                field = name.split(":")[0]
                if route == "openai" and field in ("text", "temperature", "timeout_s"):
                    assert error["param"] == ("input" if field == "text" else field), (name, error)
                if field in ("temperature", "timeout_s"):
                    assert field in error["message"], (name, error)
                if route == "v1":
                    assert error["retryable"] is False, (name, error)
    all_breakers_closed(stack["gateway"])
    assert failovers(stack["gateway"]) == before
    ok = httpx.post(f"{stack['gateway']}/v1/tts/stream", json={"text": "Still fine."}, timeout=10)
    assert ok.status_code == 200


def test_an_input_caused_engine_failure_mid_stream_counts_against_no_worker(stack: dict[str, str]) -> None:
    for _ in range(REPEATS):
        with httpx.stream("POST", f"{stack['gateway']}/v1/tts/stream", json={"text": "Say [bad] now."}) as response:
            assert response.status_code == 200
            frames = [json.loads(line) for line in response.iter_lines() if line]
        assert frames[-1]["type"] == "error"
        assert (frames[-1]["code"], frames[-1]["retryable"]) == ("invalid_request", False), frames[-1]
    all_breakers_closed(stack["gateway"])


async def test_the_sdk_breaker_stays_closed_against_a_gateway_fed_poison(stack: dict[str, str]) -> None:
    async with OrpheusTTS([stack["gateway"]], hedge_ttfb_ms=None) as tts:
        for text in POISON_TEXTS.values():
            for _ in range(REPEATS):
                with pytest.raises(HTTPStatusError) as info:
                    [chunk async for chunk in tts.stream(text)]
                assert (info.value.status_code, info.value.code) == (400, "invalid_request")
        for _ in range(REPEATS):
            with pytest.raises(InvalidRequestError):  # refused before sending: not JSON
                [chunk async for chunk in tts.stream("Hi.", temperature=float("nan"))]
            nested: Any = []
            for _ in range(100):
                nested = [nested]
            with pytest.raises(HTTPStatusError) as info:
                [chunk async for chunk in tts.stream("Hi.", temperature=nested)]
            assert info.value.status_code == 400
            with pytest.raises(StreamError) as stream_info:
                [chunk async for chunk in tts.stream("Say [bad] now.")]
            assert stream_info.value.code == "invalid_request"
        (snapshot,) = tts.endpoints()
        assert (snapshot.breaker.value, snapshot.consecutive_failures, snapshot.failures) == ("closed", 0, 0)
        audio = b"".join([chunk async for chunk in tts.stream("Still fine.", voice="tone")])
        assert audio == render("Still fine.")
    all_breakers_closed(stack["gateway"])


async def test_poison_in_a_crowd_does_not_hurt_other_tenants(stack: dict[str, str]) -> None:
    """Poison and good requests interleaved: every good one completes, whatever the poison did."""

    async def good(client: httpx.AsyncClient, i: int) -> int:
        response = await client.post("/v1/tts/stream", json={"text": f"Good request {i}."})
        return response.status_code

    async def poison(client: httpx.AsyncClient, body: bytes) -> int:
        response = await client.post("/v1/tts/stream", content=body, headers={"content-type": "application/json"})
        return response.status_code

    async with httpx.AsyncClient(base_url=stack["gateway"], timeout=30) as client:
        bodies = list(poison_bodies("v1").values())
        statuses = await asyncio.gather(
            *(good(client, i) for i in range(10)), *(poison(client, b) for b in bodies for _ in range(2))
        )
    assert statuses[:10] == [200] * 10
    assert set(statuses[10:]) == {400}
    all_breakers_closed(stack["gateway"])
