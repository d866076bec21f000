"""``OrpheusTTS``: the SDK facade over the routing core.

It turns v1 frames into raw PCM bytes and routing errors into the exceptions
the user guide promises (:mod:`orpheus_tts.sdk.exceptions`), at one boundary:
:func:`_translate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from typing import Any

import httpx

from orpheus_tts.protocol import ErrorCode, ErrorFrame, error_body
from orpheus_tts.routing import (
    BrokenStreamError,
    EndpointSnapshot,
    NoEndpointAvailableError,
    RequestBodyError,
    Router,
    RoutingError,
    RoutingSettings,
    UpstreamConnectError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from orpheus_tts.routing.settings import DEFAULT_HEDGE_TTFB_MS
from orpheus_tts.sdk import events as _events
from orpheus_tts.sdk import realtime as _realtime
from orpheus_tts.sdk.exceptions import (
    CircuitOpenError,
    ClientClosedError,
    ConnectError,
    DeadlineExceeded,
    EventLoopMismatchError,
    HTTPStatusError,
    InvalidRequestError,
    OrpheusError,
    ReadTimeout,
    RemoteProtocolError,
    StreamError,
)

__all__ = ["OrpheusTTS"]


class _Unset:
    def __repr__(self) -> str:
        return f"{DEFAULT_HEDGE_TTFB_MS:g}"


_UNSET = _Unset()


class OrpheusTTS:
    """Streaming text-to-speech client for one gateway or a set of gateways/workers.

    ``base_urls``: one URL or a list; with several, each request goes to the
    least-loaded healthy one. ``api_key`` is sent as ``Authorization: Bearer``.
    ``hedge_ttfb_ms`` (default 400): when no audio arrived after this long, a
    backup request goes to another endpoint and the first to yield audio wins;
    ``None`` or 0 disables hedging. ``settings`` tunes the routing core
    (:class:`~orpheus_tts.routing.RoutingSettings`); ``transport`` replaces the
    network (an ``httpx.AsyncBaseTransport``, for tests).

    One instance serves any number of concurrent :meth:`stream` calls, all on
    the event loop that first uses it. Close it with :meth:`close` or use it
    as ``async with OrpheusTTS(...) as tts:``.
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        api_key: str | None = None,
        hedge_ttfb_ms: float | _Unset | None = _UNSET,
        *,
        settings: RoutingSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("base_urls must name at least one gateway or worker URL")
        settings = settings or RoutingSettings()
        if not isinstance(hedge_ttfb_ms, _Unset):
            settings = dataclasses.replace(settings, hedge_ttfb_ms=hedge_ttfb_ms)
        self._router = Router(urls, settings, transport=transport)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._keeper: asyncio.Task[None] | None = None

    @property
    def settings(self) -> RoutingSettings:
        return self._router.settings

    def __repr__(self) -> str:
        urls = ", ".join(e.url for e in self._router.endpoints)
        return f"OrpheusTTS([{urls}], hedge_ttfb_ms={self.settings.hedge_ttfb_ms})"

    async def stream(self, text: str, voice: str | None = None, **params: Any) -> AsyncIterator[bytes]:
        """Synthesize ``text``; yields raw PCM (s16le, mono, 24 kHz) chunks as they arrive.

        ``voice`` and every keyword in ``params`` (``temperature``, ``top_p``,
        ``top_k``, ``max_tokens``, ``timeout_s``…) are sent to the service
        unchanged. Every chunk holds whole samples. The stream either ends
        complete or raises; audio is never silently cut short, and nothing is
        retried once a chunk was yielded.
        """
        async with contextlib.aclosing(self._v1_events(text, voice, params)) as events:
            async for event in events:
                if isinstance(event, _events.Audio):
                    yield event.data

    async def stream_events(
        self, text: str, voice: str | None = None, *, timestamps: bool = False, **params: Any
    ) -> AsyncIterator[_events.Event]:
        """Like :meth:`stream`, but yields typed events: ``Audio``, ``Words`` (``timestamps=True``), ``Metrics``."""
        if timestamps:
            params = {**params, "timestamps": True}
        async with contextlib.aclosing(self._v1_events(text, voice, params)) as events:
            async for event in events:
                yield event

    def _v1_events(self, text: str, voice: str | None, params: dict[str, Any]) -> AsyncGenerator[_events.Event, None]:
        """One v1 stream's events; the stream is closed when the iterator is (``aclosing``)."""
        self._bind_loop()
        if not isinstance(text, str):
            raise InvalidRequestError(f"text must be a string, got {type(text).__name__}")
        body: dict[str, Any] = {"text": text, "voice": voice, **params}
        return _events.v1_events(self._router, self._headers, body)

    def realtime(
        self,
        voice: str | None = None,
        *,
        output_format: str = "pcm_24000",
        timestamps: bool = False,
        open_timeout_s: float = 10.0,
        **params: Any,
    ) -> _realtime.RealtimeSession:
        """A realtime session (``async with``): ``send(text)``, ``flush()``, ``end()``, ``cancel()``, events.

        See :mod:`orpheus_tts.sdk.realtime`; ``params`` are the engine's parameters, as for :meth:`stream`.
        """
        self._bind_loop()
        return _realtime.RealtimeSession(
            self._router,
            self._headers,
            voice=voice,
            output_format=output_format,
            timestamps=timestamps,
            params=params,
            open_timeout_s=open_timeout_s,
        )

    async def stream_text(
        self, texts: AsyncIterable[str], voice: str | None = None, **options: Any
    ) -> AsyncIterator[bytes]:
        """Speak text as it is written (e.g. an LLM's tokens); yields audio bytes until the text is spoken."""
        async with self.realtime(voice, **options) as session:
            async for data in _realtime.stream_text(session, texts):
                yield data

    def endpoints(self) -> list[EndpointSnapshot]:
        """Each endpoint's live routing state. Introspection only: not a stable API."""
        return self._router.snapshots()

    async def close(self) -> None:
        """Close the HTTP connections. Idempotent; the instance cannot stream afterwards.

        Works from any event loop: the connections live on the loop the
        instance streamed on, so they are closed there (from another thread's
        running loop too). When that loop has ended, they were already closed
        as it shut down (``asyncio.run`` cancels every task, and the instance
        keeps one that releases them), so e.g.
        ``atexit.register(lambda: asyncio.run(tts.close()))`` is clean.
        """
        if self._closed:
            return
        self._closed = True
        loop, running = self._loop, _running_loop()
        if loop is None or loop is running:
            await self._release()
        elif loop.is_closed():
            # Released at the loop's shutdown; if it ended without one, its transports went with it.
            with contextlib.suppress(RuntimeError):
                await self._router.aclose()
        elif loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._release(), loop))
        else:  # a loop that is stopped but not closed: run it once more, off this loop's thread
            await asyncio.to_thread(loop.run_until_complete, self._release())

    async def _release(self) -> None:
        """Close the connections on the loop they belong to, and stop the keeper task."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
        await self._router.aclose()

    async def _release_at_loop_end(self) -> None:
        """Wait for the loop to end: cancelled at its shutdown, release the connections while it still runs."""
        try:
            await asyncio.Event().wait()
        finally:
            if self._keeper is asyncio.current_task():
                self._keeper = None
                await self._router.aclose()

    async def __aenter__(self) -> OrpheusTTS:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _bind_loop(self) -> None:
        if self._closed:
            raise ClientClosedError("this OrpheusTTS instance is closed; create a new one")
        loop = _running_loop()
        if self._loop is None:
            self._loop = loop
            self._keeper = loop.create_task(self._release_at_loop_end(), name="orpheus-tts-release")
        elif self._loop is not loop:
            raise EventLoopMismatchError(
                "this OrpheusTTS instance is bound to another event loop (the first one that used it); "
                "create one instance per event loop"
            )


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _translate(error: RoutingError) -> OrpheusError:
    """The SDK exception for a routing error: the one place they are mapped."""
    if isinstance(error, RequestBodyError):
        return InvalidRequestError(str(error))
    if isinstance(error, NoEndpointAvailableError):
        return CircuitOpenError(str(error), endpoints=error.endpoints, retry_in_s=error.retry_in_s)
    if isinstance(error, UpstreamStatusError):
        if error.status == 504 or error.code == ErrorCode.DEADLINE_EXCEEDED.value:
            return DeadlineExceeded(f"the server's deadline passed: {error.message}", endpoint=error.endpoint)
        request = httpx.Request("POST", error.endpoint + "/v1/tts/stream")
        response = httpx.Response(
            error.status, headers=error.headers, json=error_body(error.code, error.message), request=request
        )
        return HTTPStatusError(
            f"{error.status} {error.code}: {error.message}",
            request=request,
            response=response,
            code=error.code,
            service_message=error.message,
            retry_after_s=error.retry_after_s,
            endpoint=error.endpoint,
        )
    if isinstance(error, UpstreamConnectError):
        return ConnectError(str(error), endpoint=error.endpoint)
    if isinstance(error, UpstreamTimeoutError):
        return ReadTimeout(str(error), endpoint=error.endpoint)
    if isinstance(error, BrokenStreamError):
        return RemoteProtocolError(str(error), endpoint=error.endpoint)
    return OrpheusError(str(error))


def _from_error_frame(frame: ErrorFrame) -> OrpheusError:
    if frame.code == ErrorCode.DEADLINE_EXCEEDED.value:
        return DeadlineExceeded(f"the server's deadline passed: {frame.message}")
    return StreamError(frame.code, frame.message, retryable=frame.retryable)
