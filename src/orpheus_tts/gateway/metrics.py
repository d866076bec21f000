"""Gateway metrics: the shared set plus upstream health, circuits, hedges, failovers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from orpheus_tts.routing import BreakerState, Router, RoutingEvent
from orpheus_tts.serving.metrics import ServiceMetrics

__all__ = ["GatewayMetrics"]


class GatewayMetrics(ServiceMetrics):
    """Labels are worker URLs from configuration: a bounded set."""

    def __init__(self) -> None:
        super().__init__("gateway")
        r = self.registry
        self.upstream_up = Gauge("orpheus_upstream_up", "1 if the worker passed its last probe", ["worker"], registry=r)
        self.circuit_open = Gauge(
            "orpheus_circuit_open", "1 while the worker's circuit is open", ["endpoint"], registry=r
        )
        self.hedges = Counter("orpheus_hedges", "Backup requests by outcome", ["outcome"], registry=r)
        self.failovers = Counter("orpheus_failovers", "Requests moved to another worker before audio", registry=r)

    def on_event(self, event: RoutingEvent) -> None:
        """Count the router's hedges and failovers."""
        if event.kind == "hedge":
            self.hedges.labels(event.outcome).inc()
        elif event.kind == "failover" and event.outcome == "sent":
            self.failovers.inc()

    def refresh(self, router: Router) -> None:
        """Set the per-worker gauges from the router's snapshots."""
        for snap in router.snapshots():
            self.upstream_up.labels(snap.url).set(1 if snap.healthy else 0)
            self.circuit_open.labels(snap.url).set(1 if snap.breaker is BreakerState.OPEN else 0)
