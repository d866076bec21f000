"""Bounded attacks on a server's front door, over real loopback sockets.

Each attack is bounded in bytes, connections and seconds, and reports what it
saw (the status the server answered, how long it held the connection), so
the tests assert on it and ``bench/security.py`` records it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from orpheus_tts.serving.local import LOOPBACK, free_port, wait_ready
from tests.servers import stop_group

__all__ = [
    "Held",
    "cli_server",
    "flood",
    "header_bomb",
    "read_answer",
    "rss_kib",
    "send_head",
    "slow_body",
    "slow_headers",
    "status_of",
    "still_open",
]

CHUNK_BYTES = 64 * 1024
RECV_BYTES = 65536


@dataclass(frozen=True)
class Held:
    """What one attacking connection saw."""

    status: int | None
    """The HTTP status the server answered with; ``None``: it closed without one (or never answered)."""
    held_s: float
    """Seconds from connecting to the server closing the connection (or the attack giving up)."""
    closed: bool
    """Whether the server closed the connection before the attack's own bound."""
    sent_bytes: int = 0


def status_of(raw: bytes) -> int | None:
    """The status of a raw HTTP response, if it has a status line."""
    if not raw.startswith(b"HTTP/1."):
        return None
    parts = raw.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _connect(port: int, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket, within_s: float) -> tuple[bytes, bool]:
    """What the server sends until it closes (``True``) or ``within_s`` passes (``False``)."""
    deadline = time.monotonic() + within_s
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            piece = sock.recv(RECV_BYTES)
        except TimeoutError:
            return data, False
        except ConnectionError:
            return data, True
        if not piece:
            return data, True
        data += piece


def _server_spoke(sock: socket.socket) -> bool:
    """Whether the server has sent something (or closed) already, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def send_head(port: int, head: bytes, within_s: float = 10.0) -> Held:
    """Send one request head at once; what the server answers."""
    started = time.monotonic()
    with _connect(port) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head)
        raw, closed = read_answer(sock, within_s)
    return Held(status_of(raw), time.monotonic() - started, closed, len(head))


def header_bomb(port: int, total_bytes: int, *, path: str = "/healthz", within_s: float = 20.0) -> Held:
    """One header line of ``total_bytes`` that never ends, sent in 64 KiB pieces until the server
    answers or closes (or everything is sent)."""
    started = time.monotonic()
    sent = 0
    with _connect(port) as sock:
        try:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nX-Bomb: ".encode())
            piece = b"a" * CHUNK_BYTES
            while sent < total_bytes and time.monotonic() - started < within_s:
                sock.sendall(piece)
                sent += len(piece)
                if _server_spoke(sock):
                    break
        except OSError:
            pass
        raw, closed = read_answer(sock, max(0.1, within_s - (time.monotonic() - started)))
    return Held(status_of(raw), time.monotonic() - started, closed, sent)


def slow_headers(port: int, *, interval_s: float, max_s: float) -> Held:
    """A request head sent one byte per ``interval_s`` (slowloris), for at most ``max_s`` seconds."""
    head = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\n".encode() + b"X-Slow: " + b"a" * 10_000
    return _trickle(port, b"", head, interval_s, max_s)


def slow_body(port: int, *, interval_s: float, max_s: float, path: str = "/v1/tts/stream") -> Held:
    """Complete headers, then a JSON body one byte per ``interval_s``, for at most ``max_s`` seconds."""
    body = b'{"text": "' + b"a" * 5_000 + b'"}'
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return _trickle(port, head, body, interval_s, max_s)


def _trickle(port: int, first: bytes, rest: bytes, interval_s: float, max_s: float) -> Held:
    started = time.monotonic()
    with _connect(port) as sock:
        sent = 0
        try:
            if first:
                sock.sendall(first)
            for byte in rest:
                if _server_spoke(sock) or time.monotonic() - started > max_s:
                    break
                sock.sendall(bytes([byte]))
                sent += 1
                select.select([sock], [], [], interval_s)  # the attack's pace; wakes when the server speaks
        except OSError:
            pass
        raw, closed = read_answer(sock, max(0.1, max_s - (time.monotonic() - started)))
    return Held(status_of(raw), time.monotonic() - started, closed, sent)


@contextlib.contextmanager
def flood(port: int, count: int, head: bytes | None = None) -> Iterator[list[socket.socket]]:
    """``count`` connections, each holding an unfinished request head; closed on exit."""
    partial = head if head is not None else f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\nX-Slow: a".encode()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                sock = _connect(port, timeout_s=2.0)
            except OSError:
                continue
            sockets.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(partial)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def still_open(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has not closed (nor answered)."""
    return sum(1 for sock in sockets if not _server_spoke(sock))


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid``, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def cli_server(
    *args: str, nofile: int | None = None, log: str | None = None
) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    """``orpheus-tts ARGS`` on a free loopback port, optionally under an open-file limit of
    ``nofile`` (set in the child only); yields (URL, port, process). Its output goes to the
    file ``log`` (default: nowhere)."""
    port = free_port()
    cmd = [sys.executable, "-m", "orpheus_tts.cli", *args, "--host", LOOPBACK, "--port", str(port)]

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    output = open(log or os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_ready(url, proc=proc)
        yield url, port, proc
    finally:
        stop_group(proc)
        output.close()
