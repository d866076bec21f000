"""Servers on this machine's loopback: free ports, readiness, a uvicorn server in a thread.

Used by ``orpheus-tts serve`` and ``demo``, the benchmarks and the tests.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from orpheus_tts.serving.settings import HttpSettings

__all__ = ["LOOPBACK", "STARTUP_TIMEOUT_S", "ThreadedServer", "free_port", "run_server", "wait_ready"]

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
"""How long a server may take to start (or to load its engine) before it is given up on."""
READY_POLL_S = 0.05


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout_s: float = STARTUP_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url``/readyz until it answers 200; raises if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        time.sleep(READY_POLL_S)
    raise RuntimeError(f"{url} was not ready within {timeout_s:.0f} s")


class ThreadedServer:
    """An ASGI app served by uvicorn on a loopback port in a background thread.

    The HTTP limits are the app's own (``app.state.http``, set by both servers'
    ``create_app``), or the defaults; ``http`` overrides them.
    """

    def __init__(self, app: Any, port: int | None = None, http: HttpSettings | None = None) -> None:

        from orpheus_tts.serving.server import bind_sockets, uvicorn_config
        from orpheus_tts.serving.shutdown import DrainingServer

        state = getattr(app, "state", None)
        self.http = http or getattr(state, "http", None) or HttpSettings()
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        config = uvicorn_config(app, LOOPBACK, self.port, self.http, log_level="warning", lifespan="on")
        self.server = DrainingServer(config)
        sockets = bind_sockets(LOOPBACK, self.port, self.http) if self.http.metrics_port is not None else None
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": sockets}, name="orpheus-server", daemon=True
        )

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def run_server(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL."""
    with ThreadedServer(app, port) as server:
        yield server.url
