"""Request bodies read with a size cap, so a huge body is refused, not buffered."""

from __future__ import annotations

from starlette.requests import Request

from orpheus_tts.protocol import ErrorCode, ServiceError

__all__ = ["read_body_capped"]


async def read_body_capped(request: Request, max_bytes: int) -> bytes:
    """The request body, or ``413 body_too_large`` as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


def _too_large(max_bytes: int) -> ServiceError:
    return ServiceError(ErrorCode.BODY_TOO_LARGE, f"request body is larger than the {max_bytes}-byte limit")
