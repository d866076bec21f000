"""Shutdown that lets the app end its own streams: a uvicorn server that says when it begins.

uvicorn cancels whatever still runs once its ``timeout_graceful_shutdown``
passes, and a request cancelled that way gets a plain-text 500 (or, mid-stream,
a body cut without a word), before the app's lifespan shutdown even starts.
:class:`DrainingServer` calls ``app.state.begin_shutdown()`` (when the app
sets it) as shutdown begins, so the app can end each stream properly at its
own grace deadline; uvicorn's timeout is then set :data:`SHUTDOWN_MARGIN_S`
later, as a last resort.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable

import uvicorn

__all__ = ["SHUTDOWN_MARGIN_S", "DrainingServer", "uvicorn_grace_s"]

SHUTDOWN_MARGIN_S = 5.0
"""How long after the app's own drain grace uvicorn cancels what is left."""


def uvicorn_grace_s(drain_grace_s: float) -> int:
    """uvicorn's ``timeout_graceful_shutdown`` (whole seconds) for an app draining for ``drain_grace_s``."""
    return math.ceil(drain_grace_s + SHUTDOWN_MARGIN_S)


class DrainingServer(uvicorn.Server):
    """A ``uvicorn.Server`` that calls ``app.state.begin_shutdown()`` when shutdown begins."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin: Callable[[], None] | None = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
        if callable(begin):
            begin()
        await super().shutdown(sockets)
