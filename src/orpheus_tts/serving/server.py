"""Building the HTTP server: uvicorn with the guarded connection layer and the access-log filter.

Both ``orpheus-tts worker|gateway|serve`` and the in-process
:class:`~orpheus_tts.serving.local.ThreadedServer` build their uvicorn
configuration here, so the limits of :class:`HttpSettings` hold wherever a
server runs. With ``metrics_port`` set, the same server also listens there
(``/metrics`` is then answered only on that port). An app whose state names
``direct_routes`` (POST path -> ASGI app) has those requests handed to those
apps by the connection layer.
"""

from __future__ import annotations

import copy
import socket
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from orpheus_tts.serving.connections import guarded_protocol
from orpheus_tts.serving.settings import HttpSettings

__all__ = ["bind_sockets", "log_config", "uvicorn_config"]


def log_config() -> dict[str, Any]:
    """uvicorn's logging setup with the access log's query keys redacted."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_keys"] = {"()": "orpheus_tts.serving.accesslog.RedactQueryKeys"}
    config["loggers"]["uvicorn.access"]["filters"] = ["redact_keys"]
    return config


def uvicorn_config(app: Any, host: str, port: int, settings: HttpSettings, **options: Any) -> uvicorn.Config:
    """A uvicorn configuration serving ``app`` under ``settings``; ``options`` go to uvicorn."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings, _direct_routes(app, settings)),
        timeout_keep_alive=max(1, round(settings.keepalive_timeout_s)),
        log_config=log_config(),
        **options,
    )


def _direct_routes(app: Any, settings: HttpSettings) -> Any:
    return getattr(getattr(app, "state", None), "direct_routes", None) if settings.direct_routes else None


def bind_sockets(host: str, port: int, settings: HttpSettings) -> list[socket.socket]:
    """Listening sockets for the main port and, when set, the metrics port."""
    ports = [port] if settings.metrics_port is None else [port, settings.metrics_port]
    sockets: list[socket.socket] = []
    for each in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, each))
        except OSError:
            sock.close()
            for opened in sockets:
                opened.close()
            raise
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets
