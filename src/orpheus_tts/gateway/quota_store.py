"""Where per-key quotas live: this gateway's memory, or a store every gateway shares.

Both stores satisfy :class:`QuotaStore`: ``await store.acquire(name, limits)``
takes a stream slot and a place in the key's rate window at once (atomically,
across every gateway on a shared store), or raises
:class:`~orpheus_tts.gateway.quotas.QuotaError` (429). The
:class:`QuotaLease` it returns is settled once, with ``release()`` (the
request counted) or ``refund()`` (it was refused: its rate place is given
back); see :mod:`orpheus_tts.gateway.quotas`.

- :class:`MemoryQuotaStore` (the default): :class:`~orpheus_tts.gateway.quotas.Quotas`,
  in this process. N gateways give every key N times its quota.
- :class:`~orpheus_tts.gateway.redis_quotas.RedisQuotaStore`
  (``--quota-store redis://HOST:PORT/DB``): one set of counters for every
  gateway on the store, with leases that expire when a gateway dies.
"""

from __future__ import annotations

from typing import Protocol

from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.keys import KeyLimits
from orpheus_tts.gateway.quotas import Quotas

__all__ = ["MemoryQuotaStore", "QuotaLease", "QuotaStore", "create_quota_store"]


class QuotaLease(Protocol):
    """One admitted request's hold on its key's quotas; settled once (later calls do nothing)."""

    def release(self) -> None:
        """The request counted: free its stream slot, keep its place in the rate window."""

    def refund(self) -> None:
        """The request was refused: free its stream slot and its place in the rate window."""


class QuotaStore(Protocol):
    """Per-key quota counters; see the module docstring."""

    async def acquire(self, name: str, limits: KeyLimits) -> QuotaLease:
        """A stream slot and a rate place for key ``name``; raises ``QuotaError`` (429) or
        ``ServiceError`` 503 ``quota_store_unavailable``."""
        ...

    async def aclose(self) -> None:
        """Let go of the store (connections, renewals)."""
        ...


class MemoryQuotaStore:
    """Quotas in this gateway's memory: :class:`~orpheus_tts.gateway.quotas.Quotas` as a :class:`QuotaStore`."""

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas

    async def acquire(self, name: str, limits: KeyLimits) -> QuotaLease:
        return self.quotas.acquire(name, limits)  # never awaits: concurrent requests see each other

    async def aclose(self) -> None:
        return None


def create_quota_store(config: GatewayConfig, quotas: Quotas) -> QuotaStore:
    """The store ``config.quota_store`` names (``redis://…``), or ``quotas`` in memory."""
    if config.quota_store is None:
        return MemoryQuotaStore(quotas)
    from orpheus_tts.gateway.redis_quotas import RedisQuotaStore

    return RedisQuotaStore(
        config.quota_store,
        lease_s=config.quota_lease_s,
        timeout_s=config.quota_store_timeout_s,
        fail_open=config.quota_store_failure == "open",
    )
