"""Exceptions raised by :class:`~orpheus_tts.sdk.OrpheusTTS`.

Every class derives from :class:`OrpheusError` *and* from the standard type
the user guide promises, so ``except httpx.HTTPError``, ``except
asyncio.TimeoutError``, ``except RuntimeError`` and ``except OrpheusError``
all work::

    OrpheusError
    ├── ConnectError            (httpx.ConnectError)        no endpoint could be reached
    ├── ReadTimeout             (httpx.ReadTimeout)         the server stopped sending
    ├── RemoteProtocolError     (httpx.RemoteProtocolError) the stream broke or ended without eos
    ├── HTTPStatusError         (httpx.HTTPStatusError)     non-2xx at stream start (.code, .message)
    ├── DeadlineExceeded        (asyncio.TimeoutError)      the server's deadline passed
    ├── CircuitOpenError        (RuntimeError)              every endpoint's circuit is open
    ├── StreamError                                         the server ended the stream with an error frame
    ├── InvalidRequestError     (ValueError)                the request cannot be sent (not JSON, not text)
    ├── EventLoopMismatchError  (RuntimeError)              used from a second event loop
    └── ClientClosedError       (RuntimeError)              used after close()

Nothing is retried once audio was yielded; every exception that escapes
before the first chunk means no audio was produced, so the whole request may
safely be sent again.
"""

from __future__ import annotations

import asyncio

import httpx

__all__ = [
    "CircuitOpenError",
    "ClientClosedError",
    "ConnectError",
    "DeadlineExceeded",
    "EventLoopMismatchError",
    "HTTPStatusError",
    "InvalidRequestError",
    "OrpheusError",
    "ReadTimeout",
    "RemoteProtocolError",
    "StreamError",
]


class OrpheusError(Exception):
    """Root of every SDK exception."""

    code: str | None = None
    """The service's error code, when the service named one."""
    endpoint: str | None = None
    """Base URL of the endpoint the error came from, when there is one."""


class ConnectError(OrpheusError, httpx.ConnectError):
    """No endpoint could be reached (refused, reset, DNS, connect timeout)."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        httpx.ConnectError.__init__(self, message)
        self.endpoint = endpoint


class ReadTimeout(OrpheusError, httpx.ReadTimeout):
    """The server stopped sending for longer than the read timeout."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        httpx.ReadTimeout.__init__(self, message)
        self.endpoint = endpoint


class RemoteProtocolError(OrpheusError, httpx.RemoteProtocolError):
    """The stream broke: cut mid-body, malformed, or ended without ``eos`` (never silent short audio)."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        httpx.RemoteProtocolError.__init__(self, message)
        self.endpoint = endpoint


class HTTPStatusError(OrpheusError, httpx.HTTPStatusError):
    """The service answered non-2xx at stream start; ``.response.status_code`` is the status."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request,
        response: httpx.Response,
        code: str,
        service_message: str,
        retry_after_s: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        httpx.HTTPStatusError.__init__(self, message, request=request, response=response)
        self.code = code
        self.message = service_message
        """The service's own explanation."""
        self.retry_after_s = retry_after_s
        """The ``Retry-After`` the service sent, in seconds."""
        self.endpoint = endpoint

    @property
    def status_code(self) -> int:
        return self.response.status_code


class DeadlineExceeded(OrpheusError, asyncio.TimeoutError):
    """The server's deadline passed (504 at stream start, or a ``deadline_exceeded`` error frame)."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.code = "deadline_exceeded"
        self.endpoint = endpoint


class CircuitOpenError(OrpheusError, RuntimeError):
    """Every endpoint's circuit breaker is open: requests fail fast until a cooldown ends."""

    def __init__(self, message: str, *, endpoints: tuple[str, ...] = (), retry_in_s: float | None = None) -> None:
        super().__init__(message)
        self.endpoints = endpoints
        self.retry_in_s = retry_in_s
        """Seconds until the first circuit admits a probe, when known."""


class StreamError(OrpheusError):
    """The server ended the stream with an ``error`` frame (``.code``: engine_error, worker_lost…)."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, endpoint: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.endpoint = endpoint


class InvalidRequestError(OrpheusError, ValueError):
    """The request cannot be sent: ``text`` is not a string, or a parameter is not JSON."""

    code = "invalid_request"


class EventLoopMismatchError(OrpheusError, RuntimeError):
    """The instance was used from an event loop other than the one it is bound to."""


class ClientClosedError(OrpheusError, RuntimeError):
    """The instance was used after :meth:`~orpheus_tts.sdk.OrpheusTTS.close`."""
