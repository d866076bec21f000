"""Everything one gateway holds, built once by ``create_app`` and kept on ``app.state.gateway``.

:class:`GatewayState` also carries the steps every streaming route takes:
:meth:`~GatewayState.admit` (is the gateway taking work, who is calling),
:meth:`~GatewayState.open` (a slot of the key's quota, then the upstream's
first audio) and :meth:`~GatewayState.relay` (the frames, with the
bookkeeping done once).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from orpheus_tts.aio import Stopped
from orpheus_tts.gateway.auth import Authenticator, Identity
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.discovery import WorkerDiscovery
from orpheus_tts.gateway.metrics import GatewayMetrics
from orpheus_tts.gateway.probes import WorkerReports
from orpheus_tts.gateway.quota_store import QuotaLease, QuotaStore, create_quota_store
from orpheus_tts.gateway.relay import Draining, Relay, Render
from orpheus_tts.gateway.service import GatewayService, UpstreamStream
from orpheus_tts.protocol import ErrorCode, ServiceError, TTSRequest
from orpheus_tts.routing import Endpoint, Router, RoutingSettings

__all__ = ["SERVER_FAILURES", "GatewayState", "build_state", "counts_against_quota"]

T = TypeVar("T")


@dataclass
class GatewayState:
    """One gateway's parts; see the module docstring."""

    config: GatewayConfig
    auth: Authenticator
    settings: RoutingSettings
    router: Router
    metrics: GatewayMetrics
    service: GatewayService
    reports: WorkerReports
    quotas: QuotaStore
    """Where the keys' quotas are counted: ``auth.quotas`` in memory, or a shared store."""
    encoders: ThreadPoolExecutor = field(default_factory=ThreadPoolExecutor)
    """The bounded pool the OpenAI endpoint's audio encoders run on (``config.encoder_threads``)."""
    discovery: WorkerDiscovery | None = None
    """Workers found through DNS (``config.worker_dns``), when any are."""
    draining: Draining = field(default_factory=Draining)
    started: float = field(default_factory=time.time)
    """Wall-clock start, for ``uptime_s``."""

    def admit(self, headers: Mapping[str, str]) -> Identity:
        """Authenticate and check the gateway is taking work; raises ServiceError."""
        if self.draining.closing:
            raise ServiceError(ErrorCode.OVERLOADED, "the gateway is shutting down", retry_after_s=1)
        return self.auth.authenticate(headers)

    async def open(self, identity: Identity, request: TTSRequest, request_id: str) -> tuple[UpstreamStream, QuotaLease]:
        """Take a slot of the key's quota (429, counted, when spent), then the upstream's first audio.

        A request refused on the way (see :func:`counts_against_quota`) gives its
        place in the quota back; one that reaches its first audio counts. If the
        drain grace runs out first, the answer is 503 ``overloaded`` (retryable).
        """
        try:
            lease = await self.quotas.acquire(identity.name, identity.limits)
        except ServiceError as exc:
            self.metrics.outcome(exc.code.value)
            raise
        try:
            upstream = await self.service.open(request, request_id, self.draining.cut())
        except Stopped:
            lease.refund()
            self.metrics.outcome(ErrorCode.OVERLOADED.value)
            raise ServiceError(
                ErrorCode.OVERLOADED, "the gateway shut down before the first audio", retry_after_s=1
            ) from None
        except BaseException as exc:
            if counts_against_quota(exc):
                lease.release()
            else:
                lease.refund()
            raise
        upstream.stop = self.draining.cut()
        return upstream, lease

    def relay(self, upstream: UpstreamStream, lease: QuotaLease, render: Render[T]) -> Relay[T]:
        return Relay(upstream, lease, render, self.service, self.draining)


SERVER_FAILURES = frozenset({ErrorCode.ENGINE_ERROR, ErrorCode.WORKER_LOST, ErrorCode.INTERNAL})
"""Failures before audio that are the servers' doing: such a request still counts against its key's quota."""


def counts_against_quota(error: BaseException) -> bool:
    """Whether a request that failed before its first audio counts against its key's rate quota.

    Only failures on the servers' side do; refusals (4xx: an unknown voice or
    parameter; 503: no capacity; 504: the deadline before any audio) and a
    client that gave up do not.
    """
    return isinstance(error, ServiceError) and error.code in SERVER_FAILURES


def build_state(
    config: GatewayConfig,
    authenticator: Authenticator | None,
    routing: RoutingSettings | None,
    transport: httpx.AsyncBaseTransport | None,
) -> GatewayState:
    """The gateway's parts, wired: no keys in ``authenticator`` means open access."""
    metrics = GatewayMetrics()
    auth = authenticator if authenticator is not None else Authenticator.from_keys([])
    auth.on_failure = lambda reason: metrics.auth_failures.labels(reason).inc()
    settings = routing or RoutingSettings(
        hedge_ttfb_ms=config.hedge_ttfb_ms,
        max_attempts=config.max_attempts,
        max_connections=config.upstream_connections,
        max_keepalive_connections=config.upstream_connections,
    )
    settings = dataclasses.replace(settings, lean_http=config.upstream_client == "lean")
    router = Router(_upstreams(config, settings, transport), settings, on_event=metrics.on_event)
    discovery = None
    if config.worker_dns:
        discovery = WorkerDiscovery(
            router,
            config.worker_dns,
            refresh_s=config.dns_refresh_s,
            nameserver=config.dns_nameserver,
            transport=lambda: _transport(settings, transport),
        )
    return GatewayState(
        config=config,
        auth=auth,
        quotas=create_quota_store(config, auth.quotas),
        settings=settings,
        router=router,
        metrics=metrics,
        service=GatewayService(router, config, metrics),
        reports=WorkerReports(router),
        discovery=discovery,
        encoders=ThreadPoolExecutor(config.encoder_threads, thread_name_prefix="orpheus-encoder"),
    )


def _upstreams(
    config: GatewayConfig, settings: RoutingSettings, transport: httpx.AsyncBaseTransport | None
) -> list[Endpoint]:
    """One endpoint per worker, each with its own connection pool."""
    return [Endpoint(url, settings, transport=_transport(settings, transport)) for url in config.workers]


def _transport(settings: RoutingSettings, given: httpx.AsyncBaseTransport | None) -> httpx.AsyncBaseTransport | None:
    """The httpx transport of each worker's endpoint: the one given (tests), none (httpx's own, for
    probes) when streams go over the lean client, else aiohttp's pool."""
    if given is not None:
        return given
    return None if settings.lean_http else _pooled_transport(settings)


def _pooled_transport(settings: RoutingSettings) -> httpx.AsyncBaseTransport:
    """aiohttp's pool: httpx's own scans every pooled connection on each request, which
    costs CPU per stream when many streams are open at once."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry_s,
    )
    return AiohttpTransport(limits=limits)
