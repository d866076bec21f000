"""The reliability suite's harness: stacks on loopback, one verdict per stream, metrics, memory.

Every scenario reduces each client's experience to a :class:`Received` and
asks :func:`verdict` what happened. There are exactly three acceptable
answers: the whole audio, byte for byte (``complete``); a documented error
before any audio (``refused``); a documented error after a strict prefix of
the audio (``cut``). Anything else (a stream that ends quietly short, bytes
that are not a prefix of what the engine renders for *this* text: a
duplicate, a gap, another stream's audio) fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from orpheus_tts.engines.testing import render
from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.protocol import ErrorCode
from orpheus_tts.routing import Router, RoutingSettings
from orpheus_tts.sdk import OrpheusError, OrpheusTTS
from tests.servers import run_cli, run_server

TONE_WORKER = ("worker", "--engine", "test", "--enable-test-faults")
"""A worker process running the deterministic tone engine with its fault knobs."""
FAST_PROBE_INTERVAL_S = 0.2
"""How long a condition the stack must reach on its own (a slot freed, a worker back) may take."""

COMPLETE = "complete"
REFUSED = "refused"
CUT = "cut"
VIOLATION = "violation"
"""A stream silently short, or carrying bytes that are not a prefix of its own audio."""

TOTALS: Counter[str] = Counter()
"""Every verdict :func:`tally` gave in this session (the suite prints it at the end)."""


@dataclass
class Received:
    """What one client got: the audio, how it ended, when the first audio came."""

    text: str
    expected: bytes
    audio: bytes = b""
    error: BaseException | None = None
    first_audio_s: float | None = None
    """Seconds from the call to the first chunk."""
    elapsed_s: float = 0.0
    """Seconds from the call to the end (the last chunk or the error)."""

    @property
    def code(self) -> str | None:
        """The error's protocol code, or its type name when it carries none (a broken stream)."""
        if self.error is None:
            return None
        code = getattr(self.error, "code", None)
        return code if isinstance(code, str) and code else type(self.error).__name__


DOCUMENTED_ERRORS = frozenset(
    {code.value for code in ErrorCode}
    | {"ConnectError", "ReadTimeout", "RemoteProtocolError", "CircuitOpenError", "DeadlineExceeded"}
)
"""What a client may be told: a protocol error code, or one of the SDK's network-level exceptions."""


def verdict(r: Received) -> str:
    """``complete``, ``refused`` or ``cut``; raises AssertionError on anything else.

    Exactly one of: no error and every byte (``complete``); a documented error
    and no audio (``refused``); a documented error after a *strict* prefix
    (``cut``). The whole audio followed by an error is none of them: a client
    would take the error for a failure and resend audio it already has.
    """
    if r.error is None:
        assert r.audio == r.expected, (
            f"{r.text[:40]!r}: the stream ended without an error but carries {len(r.audio)} of "
            f"{len(r.expected)} bytes{' (not a prefix)' if not r.expected.startswith(r.audio) else ''}"
        )
        return COMPLETE
    assert r.code in DOCUMENTED_ERRORS, f"{r.text[:40]!r}: undocumented error {r.code}: {r.error!r}"
    assert r.expected.startswith(r.audio), (
        f"{r.text[:40]!r}: {len(r.audio)} bytes received before {r.code} are not a prefix of the expected audio"
    )
    assert len(r.audio) < len(r.expected), f"{r.text[:40]!r}: the whole audio, then {r.code}: neither complete nor cut"
    return CUT if r.audio else REFUSED


def tally(results: Iterable[Received], refused: Iterable[str] = (), cut: Iterable[str] = ()) -> Counter[str]:
    """Verdicts and error codes of ``results``; every failure must carry one of the allowed codes."""
    allowed = {REFUSED: set(refused), CUT: set(cut)}
    counts: Counter[str] = Counter()
    for r in results:
        try:
            kind = verdict(r)
        except AssertionError:
            TOTALS[VIOLATION] += 1
            raise
        counts[kind] += 1
        TOTALS[kind] += 1
        if kind != COMPLETE:
            assert r.code in allowed[kind], f"{r.text[:40]!r} was {kind} with {r.code}: {r.error!r}"
            counts[f"{kind}:{r.code}"] += 1
    return counts


async def sdk_stream(tts: OrpheusTTS, text: str, voice: str = "tone", speed: float = 1.0, **params: Any) -> Received:
    """Stream ``text`` through the SDK; every SDK exception is recorded, never raised."""
    got = Received(text, render(text, voice, speed))
    chunks: list[bytes] = []
    started = time.monotonic()
    try:
        extra = {"speed": speed} if speed != 1.0 else {}
        async for chunk in tts.stream(text, voice, **extra, **params):
            if got.first_audio_s is None:
                got.first_audio_s = time.monotonic() - started
            chunks.append(chunk)
    except OrpheusError as exc:
        got.error = exc
    got.audio = b"".join(chunks)
    got.elapsed_s = time.monotonic() - started
    return got


# ------------------------------------------------------------------ processes and servers


@contextlib.contextmanager
def tone_workers(count: int, *extra: str) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """``count`` worker processes (tone engine, faults on); yields (URL, process) pairs."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(run_cli(*TONE_WORKER, *extra)) for _ in range(count)]


@contextlib.contextmanager
def gateway(urls: Iterable[str], routing: RoutingSettings | None = None, **config: Any) -> Iterator[str]:
    """A gateway in a thread of this process in front of ``urls``; yields its URL."""
    with routed_gateway(urls, routing, **config) as (url, _):
        yield url


@contextlib.contextmanager
def routed_gateway(
    urls: Iterable[str], routing: RoutingSettings | None = None, **config: Any
) -> Iterator[tuple[str, Router]]:
    """:func:`gateway`, yielding its router too (its stats count attempts, failovers, denials)."""
    settings = {"probe_interval_s": FAST_PROBE_INTERVAL_S, **config}
    app = create_app(GatewayConfig(workers=tuple(urls), **settings), routing=routing)
    with run_server(app) as url:
        yield url, app.state.router


def kill(process: subprocess.Popen[bytes] | int) -> None:
    """SIGKILL a process (a worker: no chance to say goodbye) and reap it when it is our child."""
    pid = process if isinstance(process, int) else process.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not isinstance(process, int):
        process.wait(timeout=10)


def worker_pids(serve_pid: int) -> dict[int, str]:
    """Live worker processes of an ``orpheus-tts serve``: pid → the port it listens on."""
    found = {}
    for child in psutil.Process(serve_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
            if child.status() != psutil.STATUS_ZOMBIE and "worker" in cmd:
                found[child.pid] = cmd[cmd.index("--port") + 1]
        except (psutil.Error, ValueError, IndexError):
            continue
    return found


# ------------------------------------------------------------------ metrics


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` at ``url``/metrics whose labels include ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def system(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{url}/v1/system", timeout=5).json()
    return data


def workers_by_url(gateway_url: str) -> dict[str, dict[str, Any]]:
    return {w["url"]: w for w in system(gateway_url)["workers"]}


# ------------------------------------------------------------------ memory


@dataclass
class RssSampler:
    """Samples the resident memory of some processes in a thread; keeps each one's first and peak."""

    pids: dict[str, int]
    """Name → pid."""
    interval_s: float = 0.1
    first: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                rss = int(psutil.Process(pid).memory_info().rss)
                self.first.setdefault(name, rss)
                self.peak[name] = max(self.peak.get(name, 0), rss)

    def growth_mb(self, name: str) -> float:
        return (self.peak[name] - self.first[name]) / 2**20

    def peak_mb(self, name: str) -> float:
        return self.peak[name] / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
