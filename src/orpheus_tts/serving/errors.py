"""Error responses: every failure before streaming is JSON with a code and a message."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from orpheus_tts.protocol import ErrorCode, ServiceError, error_body

__all__ = ["error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)


def error_response(error: ServiceError, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    headers = {**error.headers(), **(extra_headers or {})}
    return JSONResponse(error.body(), status_code=error.http_status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every framework and unexpected error onto the protocol's JSON error body."""

    async def on_service_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse(error_body(ErrorCode.INVALID_REQUEST, details or "invalid request"), status_code=400)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = ErrorCode.NOT_FOUND if exc.status_code in (404, 405) else ErrorCode.INVALID_REQUEST
        if exc.status_code >= 500:
            code = ErrorCode.INTERNAL
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # Nobody is left to read an answer: one line, not a traceback.
        client = request.client
        where = f"{client.host}:{client.port}" if client else "a client"
        logger.info("%s left during the request body of %s %s", where, request.method, request.url.path)
        return Response(status_code=499)

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body(ErrorCode.INTERNAL, "internal server error"), status_code=500)

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
