"""The routing core shared by the SDK (app → gateways/workers) and the gateway (gateway → workers).

:class:`Router` picks an endpoint by load score (power of two choices), hedges
a late first chunk, fails over before the first chunk, and keeps a circuit
breaker per :class:`Endpoint`. See ``docs/architecture.md``.
"""

from orpheus_tts.routing.breaker import Breaker, BreakerState, Permit
from orpheus_tts.routing.budget import Budget
from orpheus_tts.routing.endpoint import Endpoint, EndpointSnapshot
from orpheus_tts.routing.errors import (
    BrokenStreamError,
    NoEndpointAvailableError,
    RequestBodyError,
    RoutingError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from orpheus_tts.routing.race import ENDPOINT_FAULT_CODES, RoutedStream
from orpheus_tts.routing.router import Router, RouterStats, RoutingEvent
from orpheus_tts.routing.settings import RoutingSettings

__all__ = [
    "ENDPOINT_FAULT_CODES",
    "Breaker",
    "BreakerState",
    "BrokenStreamError",
    "Budget",
    "Endpoint",
    "EndpointSnapshot",
    "NoEndpointAvailableError",
    "Permit",
    "RequestBodyError",
    "RoutedStream",
    "Router",
    "RouterStats",
    "RoutingError",
    "RoutingEvent",
    "RoutingSettings",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
]
