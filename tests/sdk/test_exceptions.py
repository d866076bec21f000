"""Each SDK exception is both an ``OrpheusError`` and the standard type the user guide promises."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import orpheus_tts.sdk.exceptions as exc_module
from orpheus_tts.sdk import (
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


@pytest.mark.parametrize(
    ("cls", "standard"),
    [
        (ConnectError, httpx.ConnectError),
        (ReadTimeout, httpx.ReadTimeout),
        (RemoteProtocolError, httpx.RemoteProtocolError),
        (HTTPStatusError, httpx.HTTPStatusError),
        (DeadlineExceeded, asyncio.TimeoutError),
        (CircuitOpenError, RuntimeError),
        (EventLoopMismatchError, RuntimeError),
        (ClientClosedError, RuntimeError),
        (InvalidRequestError, ValueError),
        (StreamError, Exception),
    ],
)
def test_both_except_clauses_work(cls: type[Exception], standard: type[Exception]) -> None:
    assert issubclass(cls, OrpheusError)
    assert issubclass(cls, standard)


def test_network_errors_are_httpx_http_errors() -> None:
    for cls in (ConnectError, ReadTimeout, RemoteProtocolError, HTTPStatusError):
        assert issubclass(cls, httpx.HTTPError)


def test_deadline_is_the_builtin_timeout_on_311() -> None:
    assert issubclass(DeadlineExceeded, asyncio.TimeoutError)
    # The same class from 3.11 on; mypy targets 3.10, where they differ, so it calls the check non-overlapping.
    assert issubclass(DeadlineExceeded, TimeoutError) or asyncio.TimeoutError is not TimeoutError  # type: ignore[comparison-overlap]


def test_the_docstring_tree_names_every_class() -> None:
    doc = exc_module.__doc__ or ""
    for name in exc_module.__all__:
        assert name in doc, f"{name} is missing from the exception tree"


def test_status_error_carries_the_service_code_and_response() -> None:
    request = httpx.Request("POST", "http://x/v1/tts/stream")
    response = httpx.Response(401, request=request)
    error = HTTPStatusError(
        "401 unauthorized: bad key",
        request=request,
        response=response,
        code="unauthorized",
        service_message="bad key",
    )
    assert error.status_code == 401
    assert error.response is response
    assert (error.code, error.message) == ("unauthorized", "bad key")
