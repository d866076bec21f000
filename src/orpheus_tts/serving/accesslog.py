"""The access log never carries a key: query parameters named like one are redacted."""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "RedactQueryKeys", "redact_query_keys"]

REDACTED = "[redacted]"
_KEY_PARAM = re.compile(r"(?i)([?&](?:api[_-]?key|key|access_token|token)=)[^&#\s]*")


def redact_query_keys(path: str) -> str:
    """``path`` with the values of ``api_key``, ``key`` (and token-like) query parameters replaced."""
    if "=" not in path:
        return path
    return _KEY_PARAM.sub(r"\1" + REDACTED, path)


class RedactQueryKeys(logging.Filter):
    """A filter for ``uvicorn.access``: its records carry the path with the query as an argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "=" in a for a in args):
            record.args = tuple(redact_query_keys(a) if isinstance(a, str) else a for a in args)
        return True
