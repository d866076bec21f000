"""What the worker's and the gateway's v1 routes share: the request schema and request ids."""

from __future__ import annotations

import itertools
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from orpheus_tts.protocol import HEADER_REQUEST_ID, NDJSON_MEDIA_TYPE

__all__ = [
    "MAX_REQUEST_ID_CHARS",
    "TTS_REQUEST_SCHEMA",
    "TTS_STREAM_PATH",
    "TTS_STREAM_ROUTE",
    "inline_refs",
    "json_body_route",
    "new_request_id",
    "request_id_of",
]

TTS_STREAM_PATH = "/v1/tts/stream"
"""The v1 streaming route, on workers and gateways alike."""

MAX_REQUEST_ID_CHARS = 128
"""A longer (or unprintable) ``X-Request-Id`` is replaced by a generated one."""

TTS_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1, "description": "What to say"},
        "voice": {"type": ["string", "null"], "description": "Voice id or alias; null for the default"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "description": "Deadline in seconds"},
    },
    "additionalProperties": True,
}


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` substituted for their ``$ref``s: embedded in an OpenAPI
    request body, a ``#/$defs/…`` reference would not resolve from the document's root."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def json_body_route(schema: dict[str, Any], responses: dict[str, Any], description: str) -> dict[str, Any]:
    """``@app.post`` keyword arguments for a route that reads its JSON body itself and streams."""
    return {
        "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
        "response_class": Response,
        "responses": {200: {"content": responses, "description": description}},
    }


TTS_STREAM_ROUTE = json_body_route(TTS_REQUEST_SCHEMA, {NDJSON_MEDIA_TYPE: {}}, "NDJSON frame stream (protocol v1)")
"""``@app.post("/v1/tts/stream", **TTS_STREAM_ROUTE)`` on workers and gateways alike."""


class _RequestIds:
    """Request ids unique across processes: 32 hex digits, a random per-process half and a counter.

    Cheaper than ``uuid4`` (no object, one random draw per process) on a path
    every request takes; an id needs to be unique, not unguessable. A forked
    process (a new pid) draws its own prefix on its first id.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._prefix = ""
        self._counter = itertools.count()

    def new(self) -> str:
        pid = os.getpid()
        if pid != self._pid:
            self._pid, self._prefix, self._counter = pid, os.urandom(8).hex(), itertools.count()
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_REQUEST_IDS = _RequestIds()


def new_request_id() -> str:
    """A new request id (see :class:`_RequestIds`)."""
    return _REQUEST_IDS.new()


def request_id_of(request: Request) -> str:
    """The client's ``X-Request-Id`` when it is usable, else a new one."""
    given = request.headers.get(HEADER_REQUEST_ID, "")
    return given if 0 < len(given) <= MAX_REQUEST_ID_CHARS and given.isprintable() else new_request_id()
