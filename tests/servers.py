"""Real servers on loopback ports for tests: uvicorn in a thread, or a CLI subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from orpheus_tts.serving.local import STARTUP_TIMEOUT_S, ThreadedServer, free_port, run_server, wait_ready

__all__ = ["STARTUP_TIMEOUT_S", "ThreadedServer", "free_port", "run_cli", "run_server", "stop_group", "wait_ready"]

STOP_GRACE_S = 20.0
"""How long a stopped server may take to exit after SIGTERM before it is killed."""


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End a server started in its own session: SIGTERM to its process group, SIGKILL after the grace."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def run_cli(
    *args: str, port: int | None = None, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``orpheus-tts ARGS --port P`` as a subprocess; yields (base URL, process)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "orpheus_tts.cli", *args, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if ready:
            wait_ready(url, proc=proc)
        yield url, proc
    finally:
        stop_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
