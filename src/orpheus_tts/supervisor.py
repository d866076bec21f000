"""Worker processes for ``orpheus-tts serve``: started, watched, restarted.

Each worker is a separate OS process on a loopback port, as in production, so
a crash is contained and the gateway's failover path is the one exercised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from orpheus_tts.serving.local import free_port

__all__ = ["DEFAULT_RESTART_BACKOFF_S", "WorkerProcess", "WorkerSupervisor", "default_worker_count", "usable_cpus"]

logger = logging.getLogger(__name__)

DEFAULT_RESTART_BACKOFF_S = 1.0
"""Pause before restarting a worker that died, doubled per quick failure up to the max."""
MAX_RESTART_BACKOFF_S = 30.0
STOP_GRACE_S = 10.0
"""How long a worker gets to exit after SIGTERM before SIGKILL."""
POLL_INTERVAL_S = 0.2
PR_SET_PDEATHSIG = 1
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, so a
    supervisor killed outright (SIGKILL, OOM) leaves no orphaned workers behind."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def usable_cpus() -> float:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open(CGROUP_CPU_MAX, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return max(cpus, 1.0)


def default_worker_count(engine: str) -> int:
    """What this machine can run: one worker per two usable cores for real engines."""
    cores = int(usable_cpus())
    if engine == "test":
        return max(1, min(4, cores))
    return max(1, cores // 2)


@dataclass
class WorkerProcess:
    """One supervised worker."""

    index: int
    port: int
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff_s: float = DEFAULT_RESTART_BACKOFF_S
    next_start_at: float = field(default=0.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "orpheus_tts.cli", "worker",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--worker-id", f"worker-{self.index}", *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerSupervisor:
    """Starts ``count`` workers and restarts any that exit, with backoff."""

    def __init__(self, count: int, worker_args: Sequence[str]) -> None:
        self.workers = [WorkerProcess(i, free_port(), list(worker_args)) for i in range(count)]
        self._stopping = False
        self._wake = threading.Event()

    @property
    def urls(self) -> list[str]:
        return [w.url for w in self.workers]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def watch(self) -> None:
        """Restart dead workers until :meth:`stop` (blocking: run it in a thread)."""
        while not self._stopping:
            now = time.monotonic()
            for worker in self.workers:
                if worker.alive or self._stopping:
                    continue
                if worker.next_start_at == 0.0:
                    code = worker.process.returncode if worker.process else None
                    quick = now - worker.started_at < MAX_RESTART_BACKOFF_S
                    delay = worker.backoff_s if quick else DEFAULT_RESTART_BACKOFF_S
                    worker.backoff_s = min(delay * 2, MAX_RESTART_BACKOFF_S)
                    worker.next_start_at = now + delay
                    logger.warning("worker %d exited with %s; restarting in %.1f s", worker.index, code, delay)
                elif now >= worker.next_start_at:
                    worker.next_start_at = 0.0
                    worker.restarts += 1
                    worker.start()
            self._wake.wait(POLL_INTERVAL_S)

    def stop(self) -> None:
        """Stop watching, then stop every worker (SIGTERM, SIGKILL after a grace period)."""
        self._stopping = True
        self._wake.set()
        for worker in self.workers:
            proc = worker.process
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
