"""Workers found through DNS: a real DNS server (Debian's dnsmasq) on a loopback port answers for
several ``127.0.0.x`` addresses, each with a real worker bound on it; the answers change during
the test and the traffic moves with them, while a stream already running on a removed worker
finishes.

Skipped, saying why, where dnsmasq is not installed (``make test`` installs it as root with apt).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.discovery import parse_target
from orpheus_tts.protocol import EosFrame, Frame, FrameDecoder, MetricsFrame
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually, eventually_sync
from tests.servers import free_port, run_server

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.access("/usr/sbin/dnsmasq", os.X_OK) else None)
pytestmark = pytest.mark.skipif(
    DNSMASQ is None, reason="dnsmasq is not installed (Debian's dnsmasq-base; make test installs it as root)"
)

NAME = "workers.orpheus.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


class Dns:
    """dnsmasq answering ``NAME`` from a hosts file this test rewrites (SIGHUP rereads it)."""

    def __init__(self, directory: Path) -> None:
        self.hosts = directory / "hosts"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def answer(self, *addresses: str) -> None:
        self.hosts.write_text("".join(f"{a} {NAME}\n" for a in addresses))
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    @contextlib.contextmanager
    def running(self) -> Iterator[Dns]:
        assert DNSMASQ is not None
        cmd = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",  # authoritative for *.test: NXDOMAIN / no data, never forwarded
            f"--addn-hosts={self.hosts}",
            "--local-ttl=0",
            "--pid-file=",
            *(["--user=root"] if os.geteuid() == 0 else []),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert eventually_sync(self._answers, within_s=10), "dnsmasq did not start"
            yield self
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def _answers(self) -> bool:
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], self.port
        try:
            resolver.resolve(NAME, "A", lifetime=0.5)
        except Exception:
            return False
        return True


def shared_port() -> int:
    """A port free on every one of ADDRESSES (a headless Service's pods share one port)."""
    for _ in range(50):
        port = free_port()
        try:
            for address in ADDRESSES:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every address")


@contextlib.contextmanager
def dns_workers(port: int) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for address in ADDRESSES:
            app = create_worker(ToneEngine(capacity=8, faults=True), WorkerConfig(worker_id=address))
            stack.enter_context(run_server(app, port, host=address))
        yield


async def served_by(client: httpx.AsyncClient, gateway: str, body: dict[str, object]) -> str:
    """Stream one request to the end; the worker that served it (its metrics frame says)."""
    worker = ""
    decoder = FrameDecoder()
    async with client.stream("POST", f"{gateway}/v1/tts/stream", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for data in response.aiter_raw():
            for frame in decoder.feed(data):
                if isinstance(frame, MetricsFrame) and "worker" in frame.values:
                    worker = frame.values["worker"]
                if isinstance(frame, EosFrame):
                    return worker
    raise AssertionError("the stream ended without eos")


def test_targets_are_name_and_port() -> None:
    assert parse_target("orpheus-worker-pods:8001").port == 8001
    for bad in ("no-port", "name:", ":8001", "name:http", "name:70000"):
        with pytest.raises(ValueError, match="NAME:PORT"):
            parse_target(bad)


async def test_traffic_follows_dns_answers_and_removed_workers_drain(tmp_path: Path) -> None:
    port = shared_port()
    dns_server = Dns(tmp_path)
    dns_server.answer("127.0.0.2")
    config = GatewayConfig(
        worker_dns=(f"{NAME}:{port}",),
        dns_nameserver=f"127.0.0.1:{dns_server.port}",
        dns_refresh_s=0.1,
        probe_interval_s=0.2,
    )
    with dns_server.running(), dns_workers(port):
        app = create_app(config)
        state = app.state.gateway
        with run_server(app) as gateway:

            def routed() -> set[str]:
                return {e.url for e in state.router.endpoints}

            url = {a: f"http://{a}:{port}" for a in ADDRESSES}
            assert routed() == {url["127.0.0.2"]}
            async with httpx.AsyncClient(timeout=30) as client:
                assert {await served_by(client, gateway, {"text": "one"}) for _ in range(4)} == {"127.0.0.2"}

                # A slow stream starts on .2; then DNS says .3 and .4 instead.
                decoder = FrameDecoder()
                # About twenty pieces, 200 ms apart: it outlasts the change of answers below.
                slow_body = {"text": "A slower stream of several pieces. " * 6, "fault_piece_delay_ms": 200}
                async with client.stream("POST", f"{gateway}/v1/tts/stream", json=slow_body) as slow:
                    # One iterator kept to the end: an abandoned one is closed when collected, cutting the stream.
                    body = slow.aiter_raw()
                    frames: list[Frame] = []
                    while not frames:
                        frames += decoder.feed(await body.__anext__())
                    dns_server.answer("127.0.0.3", "127.0.0.4")
                    assert await eventually(lambda: routed() == {url["127.0.0.3"], url["127.0.0.4"]})
                    assert state.discovery.draining.keys() == {url["127.0.0.2"]}, "closed while its stream ran"
                    # Which of the two takes each request is the load scores' choice; none goes to .2.
                    seen = {await served_by(client, gateway, {"text": f"two {i}"}) for i in range(8)}
                    assert seen
                    assert seen <= {"127.0.0.3", "127.0.0.4"}
                    async for data in body:
                        frames += decoder.feed(data)
                worker = next(
                    f.values["worker"] for f in frames if isinstance(f, MetricsFrame) and "worker" in f.values
                )
                assert worker == "127.0.0.2"
                assert isinstance(frames[-1], EosFrame), "the drained worker's stream finished"
                assert await eventually(lambda: not state.discovery.draining), "the drained endpoint was closed"

                # .2 comes back and takes traffic again.
                dns_server.answer("127.0.0.2", "127.0.0.3")
                assert await eventually(lambda: routed() == {url["127.0.0.2"], url["127.0.0.3"]})
                seen = {await served_by(client, gateway, {"text": f"three {i}"}) for i in range(8)}
                assert seen
                assert seen <= {"127.0.0.2", "127.0.0.3"}


async def test_a_failing_lookup_keeps_the_workers(tmp_path: Path) -> None:
    port = shared_port()
    dns_server = Dns(tmp_path)
    dns_server.answer("127.0.0.2", "127.0.0.3")
    config = GatewayConfig(
        worker_dns=(f"{NAME}:{port}",), dns_nameserver=f"127.0.0.1:{dns_server.port}", dns_refresh_s=0.1
    )
    with dns_workers(port):
        app = create_app(config)
        state = app.state.gateway
        with dns_server.running(), run_server(app) as gateway:
            assert len(state.router.endpoints) == 2
            dns_server.proc.terminate()  # type: ignore[union-attr]
            dns_server.proc.wait()  # type: ignore[union-attr]
            before = state.discovery.refreshes
            assert await eventually(lambda: state.discovery.refreshes >= before + 2, within_s=30)
            assert len(state.router.endpoints) == 2
            async with httpx.AsyncClient(timeout=30) as client:
                assert await served_by(client, gateway, {"text": "still"}) in {"127.0.0.2", "127.0.0.3"}
