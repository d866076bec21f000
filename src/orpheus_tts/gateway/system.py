"""The gateway's views of its workers: ``/v1/voices`` (what they offer) and ``/v1/system`` (how they are)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from orpheus_tts import __version__
from orpheus_tts.gateway.probes import WORKER_FIELDS
from orpheus_tts.gateway.state import GatewayState
from orpheus_tts.routing import EndpointSnapshot

__all__ = ["system_report", "voices_listing"]


async def voices_listing(state: GatewayState) -> dict[str, Any]:
    """The union of the voices the healthy workers offer, as of the last health probe."""
    merged: dict[str, dict[str, Any]] = {}
    engines: set[str] = set()
    parameters: dict[str, Any] = {}
    default = None
    timestamps: list[bool] = []
    for listing in state.reports.listings():
        timestamps.append(bool(listing.get("capabilities", {}).get("timestamps")))
        engines.add(str(listing.get("engine")))
        default = default or listing.get("default")
        for voice in listing.get("voices", []):
            merged.setdefault(voice["id"], voice)
        for param in listing.get("parameters", []):
            parameters.setdefault(param["name"], param)
    return {
        "engine": ",".join(sorted(engines)),
        "default": default,
        "voices": list(merged.values()),
        "parameters": list(parameters.values()),
        # Word timings are promised only when every worker a request may reach can tell them.
        "capabilities": {"timestamps": bool(timestamps) and all(timestamps)},
    }


def system_report(state: GatewayState) -> dict[str, Any]:
    """The gateway and every worker: health, circuit, latency, load, capacity."""
    reports = state.reports.by_url
    unknown = dict.fromkeys(WORKER_FIELDS)  # an unreachable worker's fields are null, not missing
    workers = [{**_snapshot_json(s), **unknown, **reports.get(s.url, {})} for s in state.router.snapshots()]
    config = state.config
    return {
        "version": __version__,
        "role": "gateway",
        "uptime_s": round(time.time() - state.started, 3),
        "auth": "keys" if state.auth.enabled else "open",
        "hedge_ttfb_ms": state.settings.hedge_ttfb_ms,
        "active_streams": state.draining.active,
        "limits": {
            "default_timeout_s": config.default_timeout_s,
            "max_timeout_s": config.max_timeout_s,
            "max_text_chars": config.max_text_chars,
            "max_body_bytes": config.max_body_bytes,
            "max_json_depth": config.max_json_depth,
            "stall_timeout_s": config.stall_timeout_s,
            "drain_grace_s": config.drain_grace_s,
        },
        "workers": workers,
        "totals": {
            "workers": len(workers),
            "healthy": sum(1 for w in workers if w.get("healthy")),
            "capacity": sum(int(w.get("capacity") or 0) for w in workers if w.get("healthy")),
            "inflight": sum(int(w.get("inflight") or 0) for w in workers),
            "queue_depth": sum(int(w.get("queue_depth") or 0) for w in workers),
        },
        **state.config.extra,
    }


def _snapshot_json(snapshot: EndpointSnapshot) -> dict[str, Any]:
    data = dataclasses.asdict(snapshot)
    data["breaker"] = snapshot.breaker.value
    return data
