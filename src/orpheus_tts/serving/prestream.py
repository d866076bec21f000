"""The step before a stream: read and parse the request, or refuse it with a counted error.

Both servers' streaming routes share it::

    try:
        request = await read_parsed(http_request, config.max_body_bytes, parse)
    except ServiceError as exc:
        return refuse(metrics, exc, headers)

and then hand a ``prepare()`` coroutine to
:class:`~orpheus_tts.serving.streaming.PreparedStreamResponse`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from orpheus_tts.protocol import ServiceError
from orpheus_tts.serving.body import read_body_capped
from orpheus_tts.serving.errors import error_response
from orpheus_tts.serving.metrics import ServiceMetrics

__all__ = ["read_parsed", "refuse"]

T = TypeVar("T")


async def read_parsed(request: Request, max_body_bytes: int, parse: Callable[[bytes], T]) -> T:
    """The body, capped at ``max_body_bytes``, turned into a request by ``parse``; raises ServiceError."""
    return parse(await read_body_capped(request, max_body_bytes))


def refuse(
    metrics: ServiceMetrics,
    error: ServiceError,
    headers: Mapping[str, str],
    render: Callable[[ServiceError, dict[str, str]], Response] = error_response,
) -> Response:
    """``error`` as a response (``render`` picks the body's shape), counted under its code."""
    metrics.outcome(error.code.value)
    return render(error, dict(headers))
