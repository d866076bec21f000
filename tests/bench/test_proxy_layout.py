"""``bench.proxy --proxy-core``: the proxies on a core of their own, every thread of every process of them."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from bench.proxy_cores import Layout, pin

# A parent with a thread of its own and a child process below it, as nginx (master, worker) and a
# gateway with threads are; it says "ready" once both exist.
TREE = """
import subprocess, sys, threading, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", child.pid, flush=True)
time.sleep(60)
"""


def test_a_layout_needs_two_cores_and_gives_the_proxies_the_last() -> None:
    with pytest.raises(ValueError, match="at least 2 cores"):
        Layout({0})
    layout = Layout({0, 1, 2, 3})
    assert layout.proxy == {3}
    assert layout.shared == {0, 1, 2}
    assert layout.describe() == {"proxies": [3], "client_and_workers": [0, 1, 2]}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning to a core of its own needs two cores")
def test_pinning_moves_every_thread_of_every_process_of_a_tree() -> None:
    core = frozenset({max(os.sched_getaffinity(0))})
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        word, child = proc.stdout.readline().split()
        assert word == "ready"
        threads = [t.id for t in psutil.Process(proc.pid).threads()] + [int(child)]
        assert len(threads) >= 3  # the parent's two threads and the child
        assert all(os.sched_getaffinity(t) != core for t in threads)  # they started on every core
        assert pin(proc.pid, core) == len(threads)
        assert all(os.sched_getaffinity(t) == core for t in threads)
    finally:
        for each in psutil.Process(proc.pid).children(recursive=True):
            each.kill()
        proc.kill()
        proc.wait()
