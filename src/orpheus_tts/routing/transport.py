"""What the routing core needs from an HTTP client to POST a stream, and httpx's client behind it.

An attempt POSTs one request and reads the response's body piece by piece
(:class:`StreamClient`, :class:`StreamResponse`). Two clients provide it:
:class:`HttpxStreamClient` (the SDK's, and anything with a custom httpx
transport) and :class:`~orpheus_tts.routing.leanhttp.LeanStreamClient` (the
gateway's, to plain ``http://`` workers: asyncio protocols and httptools'
parser; ``docs/operations.md`` measures the gateway with each). Either raises only
:class:`TransportFailure` and :class:`ResponseTimeout`, which the routing
core turns into its own errors with the endpoint's context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import httpx

__all__ = [
    "HttpxStreamClient",
    "ResponseHeaders",
    "ResponseTimeout",
    "StreamClient",
    "StreamResponse",
    "TransportFailure",
]


class TransportFailure(Exception):
    """No connection could be made, or the connection broke (the message says which)."""


class ResponseTimeout(Exception):
    """The server sent nothing for longer than the read timeout."""


class ResponseHeaders(Mapping[str, str]):
    """A response's headers as read-only text, looked up by name in any case.

    What ``httpx.Headers`` gives a reader, without its cost (encoding
    detection and normalisation on every access): a repeated header reads as
    its values joined by ``", "``.
    """

    __slots__ = ("_values",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        values: dict[str, str] = {}
        for name, value in raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            values[key] = f"{values[key]}, {text}" if key in values else text
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._values!r})"


class StreamResponse(Protocol):
    """A response whose body is still arriving."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Looked up by name in any case."""
        ...

    @property
    def finished(self) -> bool:
        """True once the whole body has arrived (the connection is free for the next request)."""
        ...

    async def read(self) -> bytes:
        """The body's next piece as it arrives (de-chunked), ``b""`` at its end; raises
        ``TransportFailure`` or ``ResponseTimeout``."""
        ...

    async def aclose(self) -> None:
        """Done with the response: a body not read to its end closes the connection (the server stops)."""
        ...


class StreamClient(Protocol):
    """POSTs to one endpoint's streaming URL."""

    async def post(self, content: bytes, headers: Mapping[str, str], timeout: httpx.Timeout) -> StreamResponse:
        """Send the request; return once the response's head arrived.

        Raises ``TransportFailure`` (no connection, a broken one) or
        ``ResponseTimeout`` (no response within ``timeout.read``).
        """
        ...

    async def aclose(self) -> None: ...


class HttpxStreamClient:
    """:class:`StreamClient` over an ``httpx.AsyncClient`` (which the endpoint owns and closes)."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url

    async def post(self, content: bytes, headers: Mapping[str, str], timeout: httpx.Timeout) -> StreamResponse:
        request = self._client.build_request("POST", self._url, content=content, headers=headers, timeout=timeout)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.ReadTimeout as exc:
            raise ResponseTimeout(repr(exc)) from exc
        except httpx.TransportError as exc:
            raise TransportFailure(repr(exc)) from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        """Nothing of its own to close: the endpoint closes the client."""


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._pieces = response.aiter_bytes()
        self._finished = False

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    @property
    def finished(self) -> bool:
        return self._finished

    async def read(self) -> bytes:
        try:
            while True:
                data = await self._pieces.__anext__()
                if data:
                    return data
        except StopAsyncIteration:
            self._finished = True
            return b""
        except httpx.ReadTimeout as exc:
            raise ResponseTimeout(repr(exc)) from exc
        except httpx.HTTPError as exc:
            raise TransportFailure(repr(exc)) from exc

    async def aclose(self) -> None:
        aclose: Any = getattr(self._pieces, "aclose", None)
        try:
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        finally:
            await self._response.aclose()
