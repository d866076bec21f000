"""Request bodies as the servers accept them: JSON within a depth limit, values every engine can take.

A body is refused at validation, before it reaches a router or an engine,
when it holds something no engine can take or no encoder can write back:

- nesting deeper than ``max_depth`` levels (the decoder would recurse on it);
- a number that is not finite (``NaN``, ``Infinity``, ``1e400``) or an
  integer too large for a double;
- a string (value or key) holding an unpaired UTF-16 surrogate, which has no
  UTF-8 encoding;
- in the text to speak, characters that are not text: C0 controls other than
  tab, line feed and carriage return, DEL, C1 controls, and Unicode
  noncharacters (:data:`UNSPEAKABLE`).

Each check raises :class:`BodyValueError` naming the field at fault; the
protocol turns it into ``400 invalid_request``. Pure functions: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "UNSPEAKABLE",
    "BodyValueError",
    "check_body_values",
    "check_speakable",
    "decode_json_body",
]

DEFAULT_MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays and objects a request body may have (a v1 body needs 1, OpenAI's 2)."""

_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
UNSPEAKABLE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")
"""Characters refused in the text to speak: controls (but tab, LF, CR), surrogates, noncharacters."""
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyValueError(ValueError):
    """A request body holds a value no engine can take; ``field`` names where (``None``: the body)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def decode_json_body(raw: bytes | bytearray | str, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Decode a JSON body and apply :func:`check_body_values`; raises :class:`BodyValueError`."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BodyValueError(f"body is nested deeper than the limit of {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyValueError(f"body is not valid JSON: {exc}") from exc
    check_body_values(data, max_depth)
    return data


def check_body_values(data: Any, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
    """Raise :class:`BodyValueError` for the first value of ``data`` the module docstring refuses.

    Walks iteratively, so a deep document cannot exhaust the stack here either.
    """
    stack: list[tuple[Any, str | None, int]] = [(data, None, 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= max_depth:
                raise BodyValueError(f"body is nested deeper than the limit of {max_depth} levels", _top(where))
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str) and _SURROGATE.search(key):
                        raise BodyValueError(f"a key of {_name(where)} holds an unpaired surrogate", _top(where))
                    stack.append((item, _join(where, str(key)), depth + 1))
            else:
                stack.extend((item, _join(where, str(index)), depth + 1) for index, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise BodyValueError(f"{_name(where)} must be a finite number, got {value}", _top(where))
        elif isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > sys.float_info.max:
                raise BodyValueError(f"{_name(where)} is too large a number", _top(where))
        elif isinstance(value, str):
            match = _SURROGATE.search(value)
            if match:
                raise BodyValueError(
                    f"{_name(where)} holds an unpaired surrogate (U+{ord(match.group()):04X} at "
                    f"position {match.start()}), which is not text",
                    _top(where),
                )


def check_speakable(text: str, field: str) -> None:
    """Raise :class:`BodyValueError` when ``text`` holds a character of :data:`UNSPEAKABLE`."""
    match = UNSPEAKABLE.search(text)
    if match:
        raise BodyValueError(
            f"'{field}' holds U+{ord(match.group()):04X} at position {match.start()}: control characters "
            "(other than tab and newlines), unpaired surrogates and noncharacters cannot be spoken",
            field,
        )


def _join(where: str | None, key: str) -> str:
    return key if where is None else f"{where}.{key}"


def _top(where: str | None) -> str | None:
    """The top-level field a path starts with: what a client sent as a parameter."""
    return None if where is None else where.split(".", 1)[0]


def _name(where: str | None) -> str:
    return "the body" if where is None else f"{where!r}"
