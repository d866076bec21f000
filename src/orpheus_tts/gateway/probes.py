"""What the gateway learns from its workers besides health: their own ``/v1/system`` reports.

The router probes each worker's ``/readyz``; :class:`WorkerReports` adds, on
the same interval, what each healthy worker says of itself (engine, capacity,
queue), for the gateway's ``/v1/system``, and the voices it offers, so the
gateway's ``/v1/voices`` answers from memory instead of asking every worker
for every request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from orpheus_tts.routing import Endpoint, Router

__all__ = ["WORKER_FIELDS", "WorkerReports", "fetch_json"]

WORKER_FIELDS = ("engine", "capacity", "queue_depth", "max_queue", "worker")
"""What the gateway keeps from each worker's ``/v1/system``."""


class WorkerReports:
    """Each worker's own report from its last ``/v1/system`` probe, by worker URL."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.by_url: dict[str, dict[str, Any]] = {}
        self.voices_by_url: dict[str, dict[str, Any]] = {}
        """Each healthy worker's ``/v1/voices`` listing from the last probe."""

    async def refresh(self) -> None:
        """Health-probe every worker and keep what each reports of itself and offers."""
        await self.router.probe_all()
        # One after the other: each reuses the probe's connection instead of opening another.
        reports = await fetch_json(self.router, "/v1/system")
        voices = await fetch_json(self.router, "/v1/voices")
        self.by_url = {url: {k: report[k] for k in WORKER_FIELDS if k in report} for url, report in reports.items()}
        self.voices_by_url = voices

    def listings(self) -> list[dict[str, Any]]:
        """The voice listings of the workers that are healthy now."""
        healthy = {e.url for e in self.router.endpoints if e.healthy}
        return [listing for url, listing in self.voices_by_url.items() if url in healthy]

    async def refresh_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(Exception):
                await self.refresh()


async def fetch_json(router: Router, path: str) -> dict[str, dict[str, Any]]:
    """``GET path`` from every healthy worker at once, by worker URL; failures are skipped."""

    async def one(endpoint: Endpoint) -> dict[str, Any] | None:
        try:
            response = await endpoint.client.get(endpoint.url + path, timeout=router.settings.probe_timeout_s)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    endpoints = [e for e in router.endpoints if e.healthy]
    results = await asyncio.gather(*(one(e) for e in endpoints))
    return {e.url: r for e, r in zip(endpoints, results, strict=True) if r is not None}
