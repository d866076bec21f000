"""The cheapest Python relay on the well-kept libraries: a floor for what a Python gateway can cost.

``bench.proxy`` runs this as its ``python_floor`` path. It is aiohttp's web
server in front of one aiohttp client session to one upstream, on uvloop
(the gateway's loop): every request is forwarded with its method, path, body
and ``Content-Type``, and the upstream's body is streamed back piece by piece
as it arrives. Both sides parse HTTP in C (llhttp). It does nothing a gateway
must do (no keys, quotas, routing, deadlines or frame checks), so its CPU per
stream is a lower bound on any gateway written on these libraries, not a
design for one.

    python -m bench.relay_floor --upstream http://127.0.0.1:PORT --port PORT
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web


def app(upstream: str, keepalive_s: float) -> web.Application:
    """The relay as an aiohttp application."""
    session: aiohttp.ClientSession | None = None

    async def open_session(_: web.Application) -> None:
        nonlocal session
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive_s)
        session = aiohttp.ClientSession(upstream, connector=connector, auto_decompress=False)

    async def close_session(_: web.Application) -> None:
        if session is not None:
            await session.close()

    async def relay(request: web.Request) -> web.StreamResponse:
        assert session is not None
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/octet-stream")}
        async with session.request(request.method, request.rel_url, data=body, headers=headers) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status)
            response.content_type = upstream_response.content_type
            await response.prepare(request)
            async for piece in upstream_response.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", relay)
    application.on_startup.append(open_session)
    application.on_cleanup.append(close_session)
    return application


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="base URL of the worker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive-s", type=float, default=4.0, help="idle upstream connections are closed after")
    args = parser.parse_args(argv)
    web.run_app(
        app(args.upstream, args.keepalive_s),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
