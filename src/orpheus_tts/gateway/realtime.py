"""The gateway's realtime backend: each segment is one v1 request through the routing core.

A segment is routed like any v1 stream (scoring, failover before its first
audio, hedging) and counts against the caller's key quota while it runs; a
worker lost after a segment's first audio ends that context with
``worker_lost``, as a v1 stream would end.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from orpheus_tts.gateway.auth import Identity
from orpheus_tts.gateway.relay import same_frame
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
        session = uuid.uuid4().hex[:12]
        count = 0

        async def synthesize(request: TTSRequest) -> AsyncIterator[Frame]:
            nonlocal count
            count += 1
            upstream, lease = await state.open(identity, request, f"rt-{session}-{count}")
            return state.relay(upstream, lease, same_frame)

        return synthesize

    return RealtimeBackend(
        synthesize=for_identity,
        limits=state.config.realtime,
        authenticate=authenticate,
        needs_key=lambda: state.auth.enabled,
        allow_origins=state.config.http.allow_origins,
    )
