"""The connection layer puts both ends' addresses in the ASGI scope, as uvicorn does.

It reads them from the transport's own record (kept from the accept) rather
than asking a socket object, as uvicorn does, for each: that saved a new
connection five system calls (``bench.proxy --syscalls`` counts them). The
scope must hold the same values all the same.
"""

from __future__ import annotations

import json
import socket

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orpheus_tts.serving.connections import _address
from tests.servers import run_server


async def where(request: Request) -> JSONResponse:
    return JSONResponse({"server": request.scope["server"], "client": request.scope["client"]})


def test_the_scope_holds_both_ends_of_the_connection() -> None:
    app = Starlette(routes=[Route("/where", where)])
    with run_server(app) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(f"GET /where HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            raw = b""
            while chunk := client.recv(65536):
                raw += chunk
            mine, theirs = client.getsockname(), client.getpeername()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    seen = json.loads(body)
    assert seen["server"] == [theirs[0], theirs[1]]
    assert seen["client"] == [mine[0], mine[1]]


def test_addresses_of_every_family_read_as_uvicorn_reads_them() -> None:
    assert _address(("127.0.0.1", 8000)) == ("127.0.0.1", 8000)
    assert _address(("::1", 8000, 0, 0)) == ("::1", 8000)  # IPv6: flow info and scope id dropped
    assert _address("/run/orpheus.sock") == ("/run/orpheus.sock", None)  # a Unix socket: a path, no port
    assert _address("") is None  # an unnamed Unix socket's peer
    assert _address(None) is None
