"""A finished stream leaves nothing of ours for the cycle collector, however it ended.

Objects in a reference cycle are freed only when the cycle collector runs,
and a collection costs time in proportion to what it finds: a gateway whose
every stream left a cycle spent a share of its CPU on the collector, the
more the more streams were in flight. With the cycles broken, a stream's
objects are freed by reference counting as soon as the response is done.

A real worker and a real gateway on loopback; each way a stream can end is
run with the collector saving what it finds (``gc.DEBUG_SAVEALL``), and
nothing it finds may be an object, function or method of this project. (The
test's own HTTP client and asyncio's selector transports leave cycles of
their own; they are not ours and are not counted.)
"""

from __future__ import annotations

import collections
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.protocol import ChunkFrame, FrameDecoder
from orpheus_tts.worker.app import create_app as create_worker_app
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually
from tests.routing.engines import CountingToneEngine
from tests.servers import free_port, run_server
from tests.streams import stream_tts

TEXT = "Nothing of this stream waits for the collector. Not even at its end."


@dataclass
class Stack:
    worker: str
    gateway: str
    engine: CountingToneEngine
    stranded: str
    """A gateway whose only worker is not there."""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    engine = CountingToneEngine(faults=True)
    nobody = f"http://127.0.0.1:{free_port()}"
    with run_server(create_worker_app(engine, WorkerConfig())) as worker:
        with run_server(create_app(GatewayConfig(workers=(worker,)))) as gateway:
            with run_server(create_app(GatewayConfig(workers=(nobody,)))) as stranded:
                yield Stack(worker, gateway, engine, stranded)


def ours(obj: object) -> str | None:
    """The name of ``obj`` if this project defined it (its class, or the function or method itself)."""
    module = getattr(type(obj), "__module__", None) or ""
    if module.startswith("orpheus_tts"):
        return type(obj).__qualname__
    if callable(obj) and (getattr(obj, "__module__", None) or "").startswith("orpheus_tts"):
        return f"{type(obj).__name__} {getattr(obj, '__qualname__', '?')}"
    return None


@contextlib.contextmanager
def collected() -> Iterator[list[Any]]:
    """What the cycle collector finds while the block runs: every unreachable object it would free."""
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[Any] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


async def whole(stack: Stack) -> None:
    result = await stream_tts(stack.gateway, {"text": TEXT})
    assert result.status == 200
    assert result.error is None


async def kept_alive(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        for _ in range(3):
            response = await client.post(f"{stack.gateway}/v1/tts/stream", json={"text": TEXT})
            assert response.status_code == 200
            assert response.content.splitlines()[-1].startswith(b'{"type":"eos"')


async def engine_error(stack: Stack) -> None:
    result = await stream_tts(stack.gateway, {"text": TEXT, "fault_error_after": 1})
    assert result.error is not None


async def past_deadline(stack: Stack) -> None:
    result = await stream_tts(stack.gateway, {"text": TEXT * 3, "fault_piece_delay_ms": 300, "timeout_s": 0.5})
    assert result.error is not None
    assert result.error.code == "deadline_exceeded"


async def client_gone(stack: Stack) -> None:
    cancelled = stack.engine.cancelled
    async with httpx.AsyncClient(timeout=30.0) as client:
        body = {"text": TEXT * 4, "fault_stall_after": 1}
        async with client.stream("POST", f"{stack.gateway}/v1/tts/stream", json=body) as response:
            decoder = FrameDecoder()
            async for data in response.aiter_raw():
                if any(isinstance(frame, ChunkFrame) for frame in decoder.feed(data)):
                    break  # leaving the block unread closes the connection
    assert await eventually(lambda: stack.engine.cancelled > cancelled)


async def refused(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.post(f"{stack.gateway}/v1/tts/stream", json={"text": ""})
    assert response.status_code == 400


async def no_worker(stack: Stack) -> None:
    result = await stream_tts(stack.stranded, {"text": TEXT})
    assert result.status == 503


async def openai_speech(stack: Stack) -> None:
    body = {"model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": "pcm"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.post(f"{stack.gateway}/v1/audio/speech", json=body)
    assert response.status_code == 200
    assert response.content


Scenario = Callable[[Stack], Awaitable[None]]


@pytest.mark.parametrize(
    "scenario",
    [whole, kept_alive, engine_error, past_deadline, client_gone, refused, no_worker, openai_speech],
    ids=lambda scenario: scenario.__name__,
)
async def test_a_finished_stream_leaves_no_cycle_of_ours(stack: Stack, scenario: Scenario) -> None:
    await scenario(stack)  # once first: what is built on first use belongs to the server, not the stream
    with collected() as found:
        for _ in range(3):
            await scenario(stack)
        assert await eventually(lambda: _idle(stack))
    left = collections.Counter(name for obj in found if (name := ours(obj)) is not None)
    assert not left, f"left for the cycle collector: {left.most_common(12)}"


def _idle(stack: Stack) -> bool:
    """Both servers are done with every stream (the worker also with the ones whose client left)."""
    worker = httpx.get(f"{stack.worker}/v1/system", timeout=5.0).json()
    gateway = httpx.get(f"{stack.gateway}/v1/system", timeout=5.0).json()
    return worker["inflight"] == 0 and all(w["inflight"] == 0 for w in gateway["workers"])
