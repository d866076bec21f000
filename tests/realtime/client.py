"""A raw realtime client for tests: the ``websockets`` library, JSON messages, a hang guard on every wait."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import websockets

from orpheus_tts.engines.base import Engine
from orpheus_tts.realtime.limits import RealtimeLimits
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.servers import run_server

HANG_GUARD_S = 60.0


@contextlib.contextmanager
def realtime_worker(
    engine: Engine, limits: RealtimeLimits | None = None, config: WorkerConfig | None = None
) -> Iterator[tuple[str, Any]]:
    """A worker with the realtime route; yields (ws URL, app)."""
    config = config or WorkerConfig()
    app = create_app(engine, dataclasses.replace(config, realtime=limits or config.realtime))
    with run_server(app) as url:
        yield "ws" + url.removeprefix("http") + "/v1/tts/realtime", app


@dataclass
class Conversation:
    """Everything a socket received, in order."""

    ws: Any
    received: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def next(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), HANG_GUARD_S)
        message: dict[str, Any] = json.loads(raw)
        self.received.append(message)
        return message

    async def until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            message = await self.next()
            if done(message):
                return message

    async def until_type(self, kind: str, context_id: str | None = None) -> dict[str, Any]:
        """The next ``kind`` message (of ``context_id``); an unexpected error for that context fails at once."""

        def done(m: dict[str, Any]) -> bool:
            mine = context_id is None or m.get("context_id") == context_id
            if kind != "error" and mine and context_id is not None and m["type"] == "error":
                raise AssertionError(f"waiting for {kind!r} of {context_id!r}, got {m}")
            return m["type"] == kind and mine

        return await self.until(done)

    async def until_done(self, *context_ids: str) -> None:
        """Until every one of ``context_ids`` has said ``done``, in whatever order they finish."""
        while True:
            waiting = [cid for cid in context_ids if not self.of(cid, "done")]
            for cid in waiting:
                if self.of(cid, "error"):
                    raise AssertionError(f"waiting for 'done' of {cid!r}, got {self.of(cid, 'error')[-1]}")
            if not waiting:
                return
            await self.next()

    def of(self, context_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("context_id") == context_id and (kind is None or m["type"] == kind)]

    def audio(self, context_id: str) -> bytes:
        return b"".join(base64.b64decode(m["audio"]) for m in self.of(context_id, "audio"))


@contextlib.asynccontextmanager
async def conversation(url: str, **connect: Any) -> AsyncIterator[Conversation]:
    async with websockets.connect(url, **connect) as ws:
        conv = Conversation(ws)
        ready = await conv.next()
        assert ready["type"] == "ready", ready
        yield conv
