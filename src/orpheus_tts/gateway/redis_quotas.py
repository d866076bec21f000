"""Quotas shared by every gateway on one redis store (``--quota-store redis://HOST:PORT/DB``).

Per key, two sorted sets: ``…:streams`` holds one member per open stream,
scored by the time its lease expires, and ``…:rate`` one member per request
in the last 60 s, scored by its start. :data:`ACQUIRE` (a Lua script, so it
runs atomically on the server, on the server's clock) drops expired leases and
old starts, checks both limits and records the new request, or says which
limit refused it: there is no read-then-write race between gateways.

A lease is renewed every third of ``lease_s`` while its stream runs; a
gateway that dies stops renewing, and its streams' slots expire within
``lease_s``. :meth:`RedisLease.release` removes the stream slot,
:meth:`RedisLease.refund` the rate place too; both run in the background (a
response never waits on the store to finish).

When the store cannot be reached within ``timeout_s``, ``acquire`` refuses
with 503 ``quota_store_unavailable`` (retryable), or, with ``fail_open``,
admits without quotas (logged, and counted in :attr:`RedisQuotaStore.failed_open`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orpheus_tts.gateway.keys import KeyLimits
from orpheus_tts.gateway.quota_store import QuotaLease
from orpheus_tts.gateway.quotas import CONCURRENCY_RETRY_AFTER_S, RATE_WINDOW_S, Lease, QuotaError
from orpheus_tts.protocol import ErrorCode, ServiceError

__all__ = ["ACQUIRE", "KEY_PREFIX", "RENEW", "RedisLease", "RedisQuotaStore"]

logger = logging.getLogger(__name__)

KEY_PREFIX = "orpheus:quota:"
STORE_RETRY_AFTER_S = 1.0
"""``Retry-After`` sent with 503 ``quota_store_unavailable``."""

ACQUIRE = """
-- KEYS: streams, rate. ARGV: id, lease ms, max streams (-1: none), requests per minute (-1: none), window ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, lease, max_streams, rpm, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
    tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local open = redis.call('ZCARD', KEYS[1])
if max_streams >= 0 and open >= max_streams then
    return {1, open, 0}
end
if rpm >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
    local used = redis.call('ZCARD', KEYS[2])
    if used >= rpm then
        local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        return {2, used, tonumber(oldest[2]) + window - now}
    end
    redis.call('ZADD', KEYS[2], now, id)
    redis.call('PEXPIRE', KEYS[2], window)
end
redis.call('ZADD', KEYS[1], now + lease, id)
if redis.call('PTTL', KEYS[1]) < lease then
    redis.call('PEXPIRE', KEYS[1], lease)
end
return {0, open + 1, 0}
"""
"""Take a slot: ``{0, open, 0}``, or ``{1, open, 0}`` (streams) / ``{2, used, retry ms}`` (rate) when refused."""

RENEW = """
-- KEYS: streams. ARGV: id, lease ms. Extends a lease that still exists; 1 if it did.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease then
    redis.call('PEXPIRE', KEYS[1], lease)
end
return renewed
"""


def _keys(name: str) -> tuple[str, str]:
    return f"{KEY_PREFIX}{name}:streams", f"{KEY_PREFIX}{name}:rate"


class RedisLease:
    """A stream slot held in the store: renewed until settled; see the module docstring."""

    def __init__(self, store: RedisQuotaStore, name: str, lease_id: str) -> None:
        self.store = store
        self.name = name
        self.id = lease_id
        self._settled = False
        self._renewal = asyncio.ensure_future(self._renew_forever())

    @property
    def released(self) -> bool:
        return self._settled

    async def _renew_forever(self) -> None:
        streams, _ = _keys(self.name)
        while True:
            await asyncio.sleep(self.store.lease_s / 3)
            try:
                await self.store.call(self.store.renew(keys=[streams], args=[self.id, self.store.lease_ms]))
            except ServiceError:
                logger.warning("could not renew a stream slot of key %r; it may expire mid-stream", self.name)

    def release(self) -> None:
        self._settle(refund=False)

    def refund(self) -> None:
        self._settle(refund=True)

    def _settle(self, *, refund: bool) -> None:
        if self._settled:
            return
        self._settled = True
        self._renewal.cancel()
        self.store.in_background(self.store.remove(self.name, self.id, refund=refund))


class RedisQuotaStore:
    """Per-key quotas in redis, shared by every gateway on it; see the module docstring."""

    def __init__(self, url: str, *, lease_s: float, timeout_s: float, fail_open: bool = False) -> None:
        self.url = url
        self.lease_s = lease_s
        self.lease_ms = max(1, round(lease_s * 1000))
        self.timeout_s = timeout_s
        self.fail_open = fail_open
        self.failed_open = 0
        """Requests admitted without quotas because the store could not be reached."""
        self.client: Any = aioredis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
        self.acquire_script = self.client.register_script(ACQUIRE)
        self.renew = self.client.register_script(RENEW)
        self._background: set[asyncio.Task[None]] = set()

    async def call(self, work: Any) -> Any:
        """Await one store operation; 503 ``quota_store_unavailable`` when it fails or takes too long."""
        try:
            return await asyncio.wait_for(work, self.timeout_s)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise ServiceError(
                ErrorCode.QUOTA_STORE_UNAVAILABLE,
                f"the quota store cannot be reached: {exc!r}",
                retry_after_s=STORE_RETRY_AFTER_S,
            ) from exc

    async def acquire(self, name: str, limits: KeyLimits) -> QuotaLease:
        if limits.max_concurrent_streams is None and limits.requests_per_minute is None:
            return Lease(None, name)
        lease_id = uuid.uuid4().hex
        streams, rate = _keys(name)
        args: list[str | int] = [
            lease_id,
            self.lease_ms,
            -1 if limits.max_concurrent_streams is None else limits.max_concurrent_streams,
            -1 if limits.requests_per_minute is None else limits.requests_per_minute,
            round(RATE_WINDOW_S * 1000),
        ]
        try:
            verdict, count, retry_ms = await self.call(self.acquire_script(keys=[streams, rate], args=args))
        except ServiceError:
            if not self.fail_open:
                raise
            self.failed_open += 1
            logger.warning("the quota store cannot be reached: admitting key %r without quotas", name)
            return Lease(None, name)
        if verdict == 1:
            raise QuotaError(
                "concurrent_streams",
                f"key {name!r} already has {count} streams open; its limit is {limits.max_concurrent_streams}",
                retry_after_s=CONCURRENCY_RETRY_AFTER_S,
            )
        if verdict == 2:
            raise QuotaError(
                "requests_per_minute",
                f"key {name!r} made {count} requests in the last {RATE_WINDOW_S:.0f} s; "
                f"its limit is {limits.requests_per_minute}",
                retry_after_s=max(int(retry_ms) / 1000, 0.001),
            )
        return RedisLease(self, name, lease_id)

    async def remove(self, name: str, lease_id: str, *, refund: bool) -> None:
        streams, rate = _keys(name)
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(streams, lease_id)
        if refund:
            pipe.zrem(rate, lease_id)
        try:
            await self.call(pipe.execute())
        except ServiceError:
            logger.warning("could not free a stream slot of key %r; it expires within %.0f s", name, self.lease_s)

    async def streams_open(self, name: str) -> int:
        """Streams key ``name`` holds across every gateway (expired leases not counted)."""
        streams, _ = _keys(name)
        now_s, now_us = await self.call(self.client.time())
        return int(await self.call(self.client.zcount(streams, f"({now_s * 1000 + now_us // 1000}", "+inf")))

    def in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Finish pending releases (bounded by the timeout), then close the connections."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=self.timeout_s * 2)
        with contextlib.suppress(Exception):
            await self.client.aclose()
