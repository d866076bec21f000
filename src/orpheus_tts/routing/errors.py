"""Routing-level exceptions: what can go wrong between a router and its endpoints.

Everything before the first audio chunk raises; after it, a server's ``error``
frame is yielded as a frame, and only a broken stream (or a read timeout) raises.
Callers translate these at one boundary: the SDK into the exceptions its user
guide promises, the gateway into HTTP statuses and ``error`` frames::

    RoutingError
    ├── RequestBodyError           the body cannot be sent (not JSON-serializable); also a ValueError
    ├── NoEndpointAvailableError   every circuit is open / every endpoint is down
    └── UpstreamError              one endpoint failed (``.endpoint`` is its URL)
        ├── UpstreamStatusError    non-2xx before the stream (status, code, message, retry_after_s)
        ├── UpstreamConnectError   no response: refused, reset, connect timeout
        ├── UpstreamTimeoutError   a read timed out (before or during the stream)
        └── BrokenStreamError      the body broke: cut, malformed, or ended without eos/error
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orpheus_tts.protocol import ErrorCode

__all__ = [
    "BrokenStreamError",
    "NoEndpointAvailableError",
    "RequestBodyError",
    "RoutingError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
]


class RoutingError(Exception):
    """Root of every exception the routing core raises."""


class RequestBodyError(RoutingError, ValueError):
    """The request body cannot be sent: it is not JSON-serializable (or holds NaN/infinity)."""


class NoEndpointAvailableError(RoutingError):
    """No endpoint can take a request: their circuits are open or probes marked them down.

    The message reads ``Circuit open for endpoint <url>[, <url>…]``.
    """

    def __init__(self, endpoints: Sequence[str], retry_in_s: float | None = None) -> None:
        self.endpoints = tuple(endpoints)
        self.retry_in_s = retry_in_s
        message = f"Circuit open for endpoint {', '.join(self.endpoints)}"
        if retry_in_s is not None:
            message += f" (next probe in {retry_in_s:.1f} s)"
        super().__init__(message)


class UpstreamError(RoutingError):
    """One endpoint failed; ``endpoint`` is its base URL."""

    retryable = True
    """Whether another endpoint may be tried (only before the first chunk)."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.message = message


class UpstreamStatusError(UpstreamError):
    """The endpoint answered with a non-2xx status before the stream started."""

    def __init__(
        self,
        endpoint: str,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(endpoint, f"{endpoint} answered {status} {code}: {message}")
        self.headers = dict(headers or {})
        """The response headers (``Retry-After``, ``X-Request-Id``…)."""
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.retryable = retryable

    @property
    def error_code(self) -> ErrorCode:
        """The protocol's code for this error (unknown codes map to ``internal``)."""
        return ErrorCode.parse(self.code)


class UpstreamConnectError(UpstreamError):
    """No response: connection refused or reset, DNS failure, connect or write timeout."""


class UpstreamTimeoutError(UpstreamError):
    """A read from the endpoint timed out."""


class BrokenStreamError(UpstreamError):
    """The response body broke: cut mid-way, malformed NDJSON, or ended without ``eos``/``error``."""
