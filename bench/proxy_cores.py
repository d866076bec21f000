"""Where the proxy benchmark's processes run, and what they cost: process trees, their CPU, core layouts."""

from __future__ import annotations

import contextlib
import os

import psutil

from bench.common import cpu_seconds

__all__ = ["Layout", "pin", "process_tree", "tree_cpu_seconds"]


def process_tree(pid: int) -> list[int]:
    """``pid`` and the processes below it (nginx's worker under its master)."""
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of the processes below it."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):  # gone meanwhile
            total += cpu_seconds(p)
    return total


class Layout:
    """Which cores run what with ``--proxy-core``: the proxies on one core of their own (the last this
    process may use), the client (this process) and the workers on the others, as a gateway on a
    machine of its own in front of the workers' machines would be.

    Without it every process may run on every core, and each millisecond of CPU a proxy spends is one
    the worker could have had: on a machine of few cores the proxy's CPU then bounds the throughput.
    """

    def __init__(self, cores: set[int]) -> None:
        if len(cores) < 2:
            raise ValueError(f"--proxy-core needs at least 2 cores; this process may use {len(cores)}")
        self.proxy = frozenset({max(cores)})
        self.shared = frozenset(cores - self.proxy)

    def describe(self) -> dict[str, list[int]]:
        return {"proxies": sorted(self.proxy), "client_and_workers": sorted(self.shared)}


def pin(pid: int, cores: frozenset[int]) -> int:
    """Keep ``pid``, the processes below it and every thread of each on ``cores``; how many threads were pinned.

    Every thread: the affinity of a process is its threads' own (a thread started later takes that of
    the thread that starts it).
    """
    pinned = 0
    for each in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            for thread in psutil.Process(each).threads():
                with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                    os.sched_setaffinity(thread.id, cores)
                    pinned += 1
    return pinned
