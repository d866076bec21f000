"""The gateway's realtime backend: each segment is one v1 request through the routing core.

A segment is routed like any v1 stream (scoring, failover before its first
audio, hedging); a worker lost after a segment's first audio ends that
context with ``worker_lost``, as a v1 stream would end. A socket counts as
one stream of its key's quota for as long as it is open (its segments,
pipelined and across contexts, do not count again), so a key allowed one
stream at a time can hold one realtime socket.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from orpheus_tts.gateway.auth import Identity, Lease
from orpheus_tts.gateway.relay import same_frames
from orpheus_tts.gateway.state import GatewayState
from orpheus_tts.protocol import Frame, TTSRequest
from orpheus_tts.realtime.context import SynthesizeSegment
from orpheus_tts.realtime.websocket import RealtimeBackend

__all__ = ["gateway_backend"]


def gateway_backend(state: GatewayState) -> RealtimeBackend:
    """The realtime backend of the gateway ``state``."""

    def authenticate(headers: Mapping[str, str]) -> Identity:
        return state.admit(headers)

    def for_identity(identity: Any) -> SynthesizeSegment:
        return _SocketSegments(state, identity)

    return RealtimeBackend(
        synthesize=for_identity,
        limits=state.config.realtime,
        authenticate=authenticate,
        needs_key=lambda: state.auth.enabled,
        allow_origins=state.config.http.allow_origins,
        metrics=state.metrics,
    )


class _SocketSegments:
    """The segment synthesizer of one socket, holding the socket's quota slot until :meth:`close`."""

    def __init__(self, state: GatewayState, identity: Identity) -> None:
        self._state = state
        self._lease = state.auth.acquire(identity)  # QuotaError: the socket is refused
        self._session = uuid.uuid4().hex[:12]
        self._count = 0

    async def __call__(self, request: TTSRequest) -> AsyncIterator[Frame]:
        self._count += 1
        request_id = f"rt-{self._session}-{self._count}"
        upstream = await self._state.service.open(request, request_id)
        return self._state.relay(upstream, Lease(None, self._lease.name), same_frames)

    def close(self) -> None:
        self._lease.release()
