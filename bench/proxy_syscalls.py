"""Counting system calls per stream with strace (``bench.proxy --syscalls``): each proxy's, and the client's."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from bench.proxy_clients import TEXT, batch, open_client
from bench.proxy_cores import process_tree

__all__ = ["SYSCALL_STREAMS", "syscall_line", "syscalls"]


_WORKER_COUNTED = {"direct": "worker", "direct_worker_before": "worker_before"}
"""Under what name a direct path's system calls are counted: its worker's."""

SYSCALL_STREAMS = 300
"""Streams per proxy in the system call count (``--syscalls``), one at a time."""


STRACE_ATTACH_S = 10.0
"""How long strace may take to say it attached to every process of a proxy."""


def _first_lines(stream: IO[bytes], count: int, timeout_s: float) -> list[str]:
    """The first ``count`` lines written to ``stream``, or those that came within ``timeout_s``."""
    fd, data = stream.fileno(), b""
    deadline = time.monotonic() + timeout_s
    while data.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        piece = os.read(fd, 4096)
        if not piece:
            break
        data += piece
    return data.decode(errors="replace").splitlines()[:count]


def _strace_counts(text: str) -> dict[str, int]:
    """Calls by system call, from ``strace -c``'s table (``% time seconds usecs/call calls [errors] syscall``)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][:1].isdigit() and fields[-1] != "total" and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


class _Strace:
    """``strace -c -f`` attached to some processes (every thread of each) until :meth:`counts`."""

    def __init__(self, strace: str, pids: list[int]) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self._out = Path(self._tmp.name) / "counts.txt"
        cmd = [strace, "-c", "-f", "-o", str(self._out), *(a for p in pids for a in ("-p", str(p)))]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self._proc.stderr is not None
        lines = _first_lines(self._proc.stderr, len(pids), STRACE_ATTACH_S)  # one per process, threads included
        refused = [line for line in lines if "attached" not in line]
        self.refused: str | None = None
        """Why strace could not attach, or ``None``."""
        if refused or len(lines) < len(pids):
            self.refused = refused[0] if refused else f"no word from strace in {STRACE_ATTACH_S:g} s"
            self.close()

    def counts(self) -> dict[str, int]:
        self._proc.send_signal(signal.SIGINT)
        self._proc.communicate(timeout=30)
        try:
            return _strace_counts(self._out.read_text())
        finally:
            self._tmp.cleanup()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.communicate()
        self._tmp.cleanup()


def _per_stream(counts: dict[str, int], streams: int) -> dict[str, Any]:
    return {
        "per_stream": round(sum(counts.values()) / streams, 2),
        "by_call": {k: round(v / streams, 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])},
    }


def syscalls(
    paths: dict[str, tuple[str, int | None]],
    streams: int,
    *,
    keep_alive: bool,
    workers: dict[str, int],
    text: str = TEXT,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any] | str:
    """System calls per stream of each proxy, by call: ``strace -c`` on all its processes and threads
    while the same client sends ``streams`` streams one at a time; and the worker's (as ``worker``),
    while the client streams from it directly. The client's own (this process's) are counted beside
    each path's, in ``clients``: how a proxy writes a stream is felt by its reader. A reason string
    when the proxies' cannot be counted; the clients' reason, when only theirs cannot, in ``clients``."""
    strace = shutil.which("strace")
    if strace is None:
        return "skipped: strace is not installed (apt-get install strace to count)"
    counted: dict[str, Any] = {}
    clients: dict[str, Any] | str = {}
    for path, (url, proxy_pid) in paths.items():
        name, pid = (path, proxy_pid) if proxy_pid is not None else (_WORKER_COUNTED[path], workers[path])

        async def count(url: str, pid: int, trace_client: bool) -> tuple[str | dict[str, int], str | dict[str, int]]:
            """The proxy's counts and the client's (or why strace could not attach to each)."""
            async with open_client(4, keep_alive=keep_alive, text=text, params=params) as http:
                await batch(http, url, 1, 1)  # the client's setup and its first stream: not counted
                proxy = _Strace(strace, process_tree(pid))
                if proxy.refused is not None:
                    return proxy.refused, "not counted"
                client = _Strace(strace, [os.getpid()]) if trace_client else None
                await batch(http, url, streams, 1)
                if client is None or client.refused is not None:
                    return proxy.counts(), client.refused if client is not None and client.refused else "not counted"
                client_counts = client.counts()  # detached first, so stopping the other strace is not counted
                return proxy.counts(), client_counts

        proxy_counts, client_counts = asyncio.run(count(url, pid, isinstance(clients, dict)))
        if isinstance(proxy_counts, str):
            return f"skipped: strace could not attach (it needs ptrace permission): {proxy_counts}"
        counted[name] = _per_stream(proxy_counts, streams)
        if isinstance(clients, dict):
            if isinstance(client_counts, str):
                clients = f"skipped: strace could not attach to the client (this process): {client_counts}"
            else:
                clients[path] = _per_stream(client_counts, streams)
    return {
        "tool": "strace -c -f on every process and thread of the proxy, and of the client beside it",
        "streams": streams,
        "concurrency": 1,
        "note": "counts, not times: strace slows the traced process, which can change how reads batch",
        "paths": counted,
        "clients": clients,
    }


def syscall_line(syscalls: dict[str, Any] | str) -> str:
    if isinstance(syscalls, str):
        return f"system calls: {syscalls}"
    paths, clients = syscalls["paths"], syscalls["clients"]
    line = "system calls per stream: " + ", ".join(f"{name} {paths[name]['per_stream']:.1f}" for name in paths)
    if isinstance(clients, str):
        return f"{line}; the client's: {clients}"
    return f"{line}; the client's, by path: " + ", ".join(f"{n} {clients[n]['per_stream']:.1f}" for n in clients)
