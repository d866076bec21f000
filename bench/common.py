"""Small helpers shared by the benchmarks: results files, percentiles, plots, server processes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p10, p90, min, max and count of ``values``."""
    return {
        "median": percentile(values, 50),
        "p10": percentile(values, 10),
        "p90": percentile(values, 90),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "n": float(len(values)),
    }


def machine() -> dict[str, Any]:
    """Facts about where the numbers were taken (no host names or paths)."""
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``bench/results/NAME.json`` (atomically) and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, name: str) -> Path:
    """Save ``fig`` to ``bench/results/NAME.png`` and close it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


@contextlib.contextmanager
def orpheus_process(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``orpheus-tts ARGS`` on a free loopback port, in its own session (with ``env``, if given);
    yields (base URL, process)."""
    from orpheus_tts.serving.local import LOOPBACK, free_port

    port = free_port()
    cmd = [sys.executable, "-m", "orpheus_tts.cli", *args, "--host", LOOPBACK, "--port", str(port)]
    url = f"http://{LOOPBACK}:{port}"
    with served(cmd, url, env=env) as proc:
        yield url, proc


@contextlib.contextmanager
def served(
    cmd: list[str], url: str, *, quiet: bool = False, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` started in its own session (with ``env``, if given), ready once ``url`` answers; its whole
    group stopped at the end.

    ``quiet`` also drops its standard error (standard output always is)."""
    from orpheus_tts.serving.local import wait_ready

    stderr = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        wait_ready(url, proc=proc)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


_SCHEDSTAT = Path("/proc/self/schedstat").exists()
"""Whether the kernel keeps the scheduler's per-thread CPU counts (``/proc/PID/task/*/schedstat``)."""


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far.

    The scheduler's nanosecond count of each of its threads
    (``/proc/PID/task/*/schedstat``) where the kernel keeps one, so a short
    batch is not rounded to the 10 ms clock tick of ``/proc/PID/stat`` (the
    fallback). Threads that end during a measurement take their time with
    them; the servers measured here keep theirs.
    """
    if _SCHEDSTAT:
        total_ns = 0
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that ended meanwhile
                total_ns += int(stat.read_text().split()[0])
        return total_ns / 1e9
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
