"""Workers found through DNS: one endpoint per address of a headless Service.

Behind a Kubernetes Service with a cluster IP the gateway would see the whole
pool as one endpoint, and its scoring, hedging and breakers would be wasted.
A headless Service's name resolves to every ready pod instead:
:class:`WorkerDiscovery` resolves each ``NAME:PORT`` target (``--worker-dns``)
every ``dns_refresh_s`` through dnspython's asynchronous resolver (the
system's nameservers and search list, or ``dns_nameserver``), adds an endpoint
for each new address (with the routing core's prior, the fleet's median
latency) and drains each vanished one: it takes no new request, its running
streams finish, and it is closed once they have.

A name that does not exist, or has no address, has no workers; a lookup that
fails (timeout, no nameserver answers) changes nothing, so a flaky DNS server
never empties the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx

from orpheus_tts.routing import Endpoint, Router

__all__ = ["DnsTarget", "WorkerDiscovery", "parse_target"]

logger = logging.getLogger(__name__)

DNS_PORT = 53


@dataclass(frozen=True)
class DnsTarget:
    """A name whose addresses are workers, all listening on one port."""

    name: str
    """The DNS name, e.g. ``orpheus-worker-pods.default.svc.cluster.local``."""
    port: int
    """The workers' TCP port."""

    def url(self, address: str) -> str:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        return f"http://{host}:{self.port}"


def parse_target(text: str) -> DnsTarget:
    """``NAME:PORT`` as a :class:`DnsTarget`; raises ``ValueError`` naming the defect."""
    name, sep, port = text.strip().rpartition(":")
    if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a worker DNS target must be NAME:PORT, got {text!r}")
    return DnsTarget(name, int(port))


def _nameserver(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address as (address, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or str(DNS_PORT)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(DNS_PORT)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"a DNS nameserver must be an address, HOST[:PORT], got {text!r}") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a DNS nameserver must be HOST[:PORT], got {text!r}")
    return host, int(port)


class WorkerDiscovery:
    """Keeps ``router``'s endpoints in step with what ``targets`` resolve to; see the module docstring."""

    def __init__(
        self,
        router: Router,
        targets: Iterable[str | DnsTarget],
        *,
        refresh_s: float,
        nameserver: str | None = None,
        timeout_s: float = 2.0,
        transport: Callable[[], httpx.AsyncBaseTransport | None] = lambda: None,
    ) -> None:
        """``transport`` makes each new endpoint's transport (``None``: the router's)."""
        self.router = router
        self._transport = transport
        self.targets = [t if isinstance(t, DnsTarget) else parse_target(t) for t in targets]
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        if nameserver is None:
            self._resolver = dns.asyncresolver.Resolver()
            self._search = True
        else:
            host, port = _nameserver(nameserver)
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [host]
            self._resolver.port = port
            self._search = False
        self.managed: set[str] = set()
        """URLs this discovery added and still routes to."""
        self._known: dict[DnsTarget, set[str]] = {}
        self.draining: dict[str, Endpoint] = {}
        """Endpoints removed from routing whose streams have not all ended yet, by URL."""
        self.refreshes = 0
        """Completed refreshes (for tests and ``/v1/system``)."""

    async def _addresses(self, target: DnsTarget) -> set[str] | None:
        """The target's addresses (A and AAAA); ``None`` when every lookup failed (not: found none)."""
        found: set[str] = set()
        answered = False
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(target.name, rdtype, lifetime=self.timeout_s, search=self._search)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                answered = True
                continue
            except dns.exception.DNSException as exc:
                logger.warning("resolving %s (%s) failed: %s", target.name, rdtype, exc)
                continue
            answered = True
            found.update(record.to_text() for record in answer)
        return found if answered else None

    async def refresh(self) -> None:
        """Resolve every target once and apply the difference; close drained endpoints that are idle."""
        wanted: set[str] = set()
        for target in self.targets:
            addresses = await self._addresses(target)
            if addresses is not None:
                self._known[target] = {target.url(a) for a in addresses}
            wanted |= self._known.get(target, set())
        routed = {e.url for e in self.router.endpoints}
        for url in sorted(wanted - self.managed):
            if url in self.draining:  # back before it drained: keep its statistics
                self.router.add_endpoint(self.draining.pop(url))
            elif url not in routed:
                self.router.add_endpoint(url, transport=self._transport())
            else:
                continue  # also a static --worker: not ours to manage
            self.managed.add(url)
            logger.info("worker %s joined", url)
        for url in sorted(self.managed - wanted):
            self.managed.discard(url)
            self.draining[url] = self.router.remove_endpoint(url)
            logger.info("worker %s left; draining its streams", url)
        await self._close_idle()
        self.refreshes += 1

    async def _close_idle(self) -> None:
        for url, endpoint in list(self.draining.items()):
            if endpoint.inflight == 0:
                del self.draining[url]
                await endpoint.aclose()

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:
                logger.exception("worker discovery failed; trying again in %.1f s", self.refresh_s)

    async def aclose(self) -> None:
        """Close every draining endpoint (at shutdown, once streams had their grace)."""
        for endpoint in self.draining.values():
            with contextlib.suppress(Exception):
                await endpoint.aclose()
        self.draining.clear()
