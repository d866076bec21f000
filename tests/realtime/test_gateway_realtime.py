"""``/v1/tts/realtime`` through the gateway: segments routed to real worker processes, a lost worker, auth."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from orpheus_tts.engines.testing import render
from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.realtime.limits import UNAUTHORIZED_CLOSE_CODE
from tests.eventually import eventually
from tests.realtime.client import conversation
from tests.realtime.test_worker_realtime import TEXT, _segments
from tests.servers import run_cli, run_server

WORKER_ARGS = ("worker", "--engine", "test", "--enable-test-faults", "--capacity", "8")


@contextlib.contextmanager
def stack(workers: int = 2, keys: list[str] | None = None) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(run_cli(*WORKER_ARGS))[0] for _ in range(workers)]
        auth = Authenticator.from_keys(keys or [])
        config = GatewayConfig(workers=tuple(urls), probe_interval_s=0.2)
        gateway = stack.enter_context(run_server(create_app(config, auth)))
        yield "ws" + gateway.removeprefix("http") + "/v1/tts/realtime"


async def test_a_context_through_the_gateway_is_its_segments_audio_in_order() -> None:
    with stack() as url:
        async with conversation(url) as c:
            await c.send(type="start", context_id="a")
            for word in TEXT.split(" "):
                await c.send(type="text", context_id="a", text=word + " ")
            await c.send(type="end", context_id="a")
            done = await c.until_type("done", "a")
    assert c.audio("a") == b"".join(render(s) for s in _segments(TEXT))
    audio = c.of("a", "audio")
    assert [m["seq"] for m in audio] == list(range(len(audio)))
    assert done["samples_total"] == len(c.audio("a")) // 2


async def test_a_worker_lost_mid_context_ends_that_context_only() -> None:
    with stack() as url:
        async with conversation(url) as c:
            await c.send(type="start", context_id="a", params={"fault_crash_after": 2, "fault_piece_delay_ms": 20})
            await c.send(type="text", context_id="a", text=TEXT)
            error = await c.until_type("error", "a")
            assert error["code"] == "worker_lost"
            assert error["retryable"] is True
            assert len(c.of("a", "audio")) >= 1, "audio arrived before the loss"
            # The next context is routed to the worker that is left.
            await c.send(type="start", context_id="b")
            await c.send(type="text", context_id="b", text="After the loss.")
            await c.send(type="end", context_id="b")
            await c.until_type("done", "b")
    assert c.audio("b") == render("After the loss.")
    assert [m["type"] for m in c.of("a")][-1] == "error"


async def test_auth_by_header_or_first_message_and_4401_otherwise() -> None:
    with stack(workers=1, keys=["k-123"]) as url:
        async with conversation(url, additional_headers={"Authorization": "Bearer k-123"}) as c:
            await c.send(type="start", context_id="a")
            await c.send(type="text", context_id="a", text="Hi.")
            await c.send(type="end", context_id="a")
            await c.until_type("done", "a")
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "api_key": "k-123"}))
            assert json.loads(await ws.recv())["type"] == "ready"
        for headers, first in (
            ({"X-API-Key": "wrong"}, None),
            ({}, {"type": "auth", "api_key": "wrong"}),
            ({}, {"type": "start", "context_id": "a"}),
        ):
            async with websockets.connect(url + "?api_key=k-123", additional_headers=headers) as ws:
                if first is not None:
                    await ws.send(json.dumps(first))
                error = json.loads(await ws.recv())
                assert error["type"] == "error"
                assert error["code"] == "unauthorized"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == UNAUTHORIZED_CLOSE_CODE


async def test_a_socket_is_one_stream_of_its_key_quota(tmp_path: Path) -> None:
    from orpheus_tts.gateway.keys import new_key_stanza

    key, stanza = new_key_stanza("team-a", max_concurrent_streams=1)
    (tmp_path / "keys.toml").write_text(stanza, encoding="utf-8")
    auth = Authenticator.from_sources(keys_file=str(tmp_path / "keys.toml"))
    with contextlib.ExitStack() as es:
        worker = es.enter_context(run_cli(*WORKER_ARGS))[0]
        config = GatewayConfig(workers=(worker,), probe_interval_s=0.2)
        gateway = es.enter_context(run_server(create_app(config, auth)))
        url = "ws" + gateway.removeprefix("http") + "/v1/tts/realtime"
        headers = {"Authorization": f"Bearer {key}"}
        async with conversation(url, additional_headers=headers) as c:
            # Pipelined segments of several contexts share the socket's one slot.
            for cid in ("a", "b"):
                await c.send(type="start", context_id=cid)
                await c.send(type="text", context_id=cid, text=TEXT)
                await c.send(type="end", context_id=cid)
            await c.until_done("a", "b")  # either may finish first: each segment is scheduled by its own lead
            async with websockets.connect(url, additional_headers=headers) as second:
                refused = json.loads(await second.recv())
                assert refused["code"] == "rate_limited"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await second.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1013
        assert c.audio("a") == c.audio("b") == b"".join(render(s) for s in _segments(TEXT))
        # The slot came back with the first socket.
        assert await eventually(lambda: auth.streams_open("team-a") == 0)
        async with conversation(url, additional_headers=headers) as again:
            await again.send(type="start", context_id="c")
            await again.send(type="text", context_id="c", text="Back again.")
            await again.send(type="end", context_id="c")
            await again.until_type("done", "c")
