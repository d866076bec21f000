"""OrpheusTTS against fake upstreams (httpx.MockTransport): bytes out, errors translated, lifecycle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from orpheus_tts.protocol import ErrorFrame
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import (
    CircuitOpenError,
    ClientClosedError,
    DeadlineExceeded,
    EventLoopMismatchError,
    HTTPStatusError,
    InvalidRequestError,
    OrpheusError,
    OrpheusTTS,
    RemoteProtocolError,
    StreamError,
)
from tests.routing.fakes import AUDIO, PIECES, Upstreams, error_frame, frames_for, ok, refuse, status

MakeTTS = Callable[..., OrpheusTTS]


@pytest.fixture
async def make_tts() -> AsyncIterator[MakeTTS]:
    made: list[OrpheusTTS] = []

    def make(upstreams: Upstreams, hosts: list[str], **kwargs: Any) -> OrpheusTTS:
        kwargs.setdefault("hedge_ttfb_ms", None)
        tts = OrpheusTTS([Upstreams.url(h) for h in hosts], transport=upstreams.transport, **kwargs)
        made.append(tts)
        return tts

    yield make
    for tts in made:
        await tts.close()


async def read_all(tts: OrpheusTTS, text: str = "Hello", **params: Any) -> list[bytes]:
    return [chunk async for chunk in tts.stream(text, **params)]


async def read_into(stream: AsyncIterator[bytes], out: list[bytes]) -> None:
    async for chunk in stream:
        out.append(chunk)


async def test_yields_raw_pcm_chunks_and_sends_the_body_unchanged(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok()})
    tts = make_tts(up, ["a"], api_key="sekrit")
    chunks = await read_all(
        tts,
        "Hello world.",
        voice="alloy",
        temperature=0.4,
        top_p=0.9,
        top_k=0,
        max_tokens=1536,
        timeout_s=12.5,
        custom_key={"nested": True},
    )
    assert chunks == PIECES
    assert all(len(c) % 2 == 0 for c in chunks)
    assert up.bodies == [
        {
            "text": "Hello world.",
            "voice": "alloy",
            "temperature": 0.4,
            "top_p": 0.9,
            "top_k": 0,
            "max_tokens": 1536,
            "timeout_s": 12.5,
            "custom_key": {"nested": True},
        }
    ]
    assert up.requests[0].headers["authorization"] == "Bearer sekrit"


async def test_positional_base_urls_and_a_single_string(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok()})
    async with OrpheusTTS("http://a", None, None, transport=up.transport) as tts:
        assert b"".join(await read_all(tts)) == AUDIO
    assert "authorization" not in up.requests[0].headers
    with pytest.raises(ValueError, match="at least one"):
        OrpheusTTS([])


async def test_hedge_setting_and_settings_keyword(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok()})
    assert make_tts(up, ["a"], hedge_ttfb_ms=250).settings.hedge_ttfb_ms == 250
    assert OrpheusTTS(["http://a"]).settings.hedge_ttfb_ms == 400
    custom = RoutingSettings(hedge_ttfb_ms=123, max_attempts=1)
    tts = OrpheusTTS(["http://a"], settings=custom)
    assert tts.settings == custom
    assert OrpheusTTS(["http://a"], hedge_ttfb_ms=None, settings=custom).settings.hedge_ttfb_ms is None
    await tts.close()


async def test_4xx_becomes_an_httpx_status_error_with_code_and_message(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": status(401, "unauthorized", "missing or invalid API key")})
    tts = make_tts(up, ["a"], api_key="wrong")
    with pytest.raises(httpx.HTTPStatusError) as info:
        await read_all(tts)
    error = info.value
    assert isinstance(error, HTTPStatusError)
    assert error.response.status_code == 401
    assert (error.code, error.message) == ("unauthorized", "missing or invalid API key")
    assert json.loads(error.response.content)["error"]["code"] == "unauthorized"


async def test_429_keeps_its_retry_after(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": status(429, "rate_limited", "slow down", headers={"Retry-After": "7"})})
    tts = make_tts(up, ["a"])
    with pytest.raises(HTTPStatusError) as info:
        await read_all(tts)
    assert info.value.retry_after_s == 7.0
    assert info.value.response.headers["retry-after"] == "7"


async def test_504_and_deadline_frames_are_asyncio_timeouts(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": status(504, "deadline_exceeded", "no audio before the deadline")})
    tts = make_tts(up, ["a"])
    with pytest.raises(asyncio.TimeoutError):
        await read_all(tts)
    up.behaviours["a"] = error_frame("deadline_exceeded", after=2)
    received: list[bytes] = []
    with pytest.raises(DeadlineExceeded):
        await read_into(tts.stream("x"), received)
    assert received == PIECES[:2]


async def test_other_error_frames_are_stream_errors_with_their_code(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": error_frame("engine_error", after=1)})
    tts = make_tts(up, ["a"])
    received: list[bytes] = []
    with pytest.raises(StreamError) as info:
        await read_into(tts.stream("x"), received)
    assert info.value.code == "engine_error"
    assert received == PIECES[:1]


async def test_a_truncated_body_is_a_remote_protocol_error_never_short_audio(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok(frames_for()[:3])})
    tts = make_tts(up, ["a"])
    received: list[bytes] = []
    with pytest.raises(httpx.RemoteProtocolError) as info:
        await read_into(tts.stream("x"), received)
    assert isinstance(info.value, RemoteProtocolError)
    assert received == PIECES[:2]
    assert up.hits["a"] == 1


async def test_connect_errors_are_httpx_connect_errors(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": refuse()})
    tts = make_tts(up, ["a"])
    with pytest.raises(httpx.ConnectError) as info:
        await read_all(tts)
    assert isinstance(info.value, OrpheusError)
    assert info.value.endpoint == "http://a"


async def test_open_circuits_fail_fast_with_a_runtime_error(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": refuse(), "b": refuse()})
    settings = RoutingSettings(hedge_ttfb_ms=None, breaker_failure_threshold=2, breaker_cooldown_s=60)
    tts = make_tts(up, ["a", "b"], settings=settings)
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            await read_all(tts)
    assert up.hits == {"a": 2, "b": 2}
    with pytest.raises(RuntimeError, match=r"^Circuit open for endpoint http://a, http://b") as info:
        await read_all(tts)
    assert isinstance(info.value, CircuitOpenError)
    assert info.value.retry_in_s is not None
    assert info.value.retry_in_s > 50
    assert sum(up.hits.values()) == 4


async def test_bad_input_is_a_clear_error_before_any_request(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok()})
    tts = make_tts(up, ["a"])
    with pytest.raises(InvalidRequestError, match="text must be a string"):
        await read_all(tts, 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="JSON"):
        await read_all(tts, "x", temperature=float("nan"))
    with pytest.raises(InvalidRequestError, match="JSON"):
        await read_all(tts, "x", blob=object())
    assert not up.hits


async def test_close_is_idempotent_and_final(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok()})
    tts = make_tts(up, ["a"])
    await read_all(tts)
    await tts.close()
    await tts.close()
    with pytest.raises(ClientClosedError, match="closed"):
        await read_all(tts)


async def test_async_with_closes(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok()})
    async with OrpheusTTS(["http://a"], transport=up.transport) as tts:
        await read_all(tts)
    with pytest.raises(RuntimeError):
        await read_all(tts)


async def test_endpoint_snapshots(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok(), "b": ok()})
    tts = make_tts(up, ["a", "b/"])
    await read_all(tts)
    snaps = tts.endpoints()
    assert [s.url for s in snaps] == ["http://a", "http://b"]
    assert sum(s.requests for s in snaps) == 1
    assert all(s.breaker.value == "closed" and s.healthy for s in snaps)


async def test_many_concurrent_streams_on_one_instance(make_tts: MakeTTS) -> None:
    up = Upstreams({"a": ok(piece_delay_s=0.005), "b": ok(piece_delay_s=0.005)})
    tts = make_tts(up, ["a", "b"])
    results = await asyncio.gather(*(read_all(tts, f"t{i}") for i in range(40)))
    assert all(b"".join(r) == AUDIO for r in results)
    assert sum(up.hits.values()) == 40
    assert all(s.inflight == 0 for s in tts.endpoints())


def test_a_second_event_loop_gets_a_clear_error_not_a_hang() -> None:
    up = Upstreams({"a": ok()})
    tts = OrpheusTTS(["http://a"], transport=up.transport)

    async def use() -> bytes:
        return b"".join([c async for c in tts.stream("x")])

    assert asyncio.run(use()) == AUDIO
    with pytest.raises(EventLoopMismatchError, match="another event loop") as info:
        asyncio.run(asyncio.wait_for(use(), timeout=5))
    assert isinstance(info.value, RuntimeError)
    asyncio.run(tts.close())  # the first loop ended: its shutdown already released the connections
    assert all(e.client.is_closed for e in tts._router.endpoints)


def test_an_instance_made_outside_any_loop_binds_to_the_first_that_uses_it() -> None:
    up = Upstreams({"a": ok()})
    tts = OrpheusTTS(["http://a"], transport=up.transport)

    async def use_and_close() -> bytes:
        try:
            return b"".join([c async for c in tts.stream("x")])
        finally:
            await tts.close()

    assert asyncio.run(use_and_close()) == AUDIO


async def test_error_frames_before_audio_are_not_failed_over(make_tts: MakeTTS) -> None:
    frames = [*frames_for()[:1], ErrorFrame("engine_error", "bad text", False)]
    up = Upstreams({"a": ok(frames), "b": ok(frames)})
    tts = make_tts(up, ["a", "b"])
    with pytest.raises(StreamError, match="engine_error: bad text"):
        await read_all(tts)
    assert sum(up.hits.values()) == 1
