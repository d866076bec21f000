"""API keys: where they come from (flags, environment, a TOML keys file) and making new ones.

Keys come from ``--api-key`` (repeatable), ``ORPHEUS_API_KEYS`` (comma
separated) or a TOML keys file that holds each key's SHA-256, never the key
(see ``docs/operations-keys.md``). Everything here runs at startup or in
``orpheus-tts keys new``; a defect raises :class:`KeysFileError` (a
``ValueError``) naming the file and the entry, the one error this module raises.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found]

__all__ = [
    "MAX_KEY_CHARS",
    "NEW_KEY_BYTES",
    "NEW_KEY_PREFIX",
    "KeyLimits",
    "KeysFileError",
    "check_digest",
    "check_key",
    "check_name",
    "is_key_token",
    "load_keys_file",
    "new_key_stanza",
    "parse_env_keys",
    "sha256_hex",
]

MAX_KEY_CHARS = 512
"""Longest key accepted in a header or in configuration."""
NEW_KEY_BYTES = 32
"""Random bytes in a key made by :func:`new_key_stanza` (256 bits)."""
NEW_KEY_PREFIX = "ork_"
"""Prefix of generated keys, so secret scanners and people can recognise them."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_RULE = "a name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
_HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_KEY_ENTRY_FIELDS = frozenset({"name", "sha256", "max_concurrent_streams", "requests_per_minute"})


class KeysFileError(ValueError):
    """A keys file or key that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class KeyLimits:
    """Quotas of one key; ``None`` means unlimited."""

    max_concurrent_streams: int | None = None
    """Streams this key may have open at once."""
    requests_per_minute: int | None = None
    """Requests this key may start in any 60-second window."""


def check_name(name: str) -> None:
    """Raise :class:`KeysFileError` unless ``name`` is a valid key name."""
    if not _NAME_RE.match(name):
        raise KeysFileError(f"key name {name!r}: {_NAME_RULE}")


def check_digest(name: str, digest_hex: str) -> bytes:
    """The 32 bytes of a key's hex SHA-256; raises :class:`KeysFileError` unless it is 64 hex digits."""
    if not _HEX64_RE.match(digest_hex):
        raise KeysFileError(f"key {name!r}: the SHA-256 must be 64 hex digits")
    return bytes.fromhex(digest_hex)


def is_key_token(key: str) -> bool:
    """Whether ``key`` has the shape of a key: 1-512 printable ASCII characters without spaces."""
    return bool(key) and len(key) <= MAX_KEY_CHARS and key.isascii() and key.isprintable() and " " not in key


def sha256_hex(key: str) -> str:
    """The hex SHA-256 of a key, as a keys file stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_key(key: str, where: str) -> str:
    """``key`` itself; raises :class:`KeysFileError` unless :func:`is_key_token`."""
    if not is_key_token(key):
        raise KeysFileError(f"{where}: a key must be 1-{MAX_KEY_CHARS} printable ASCII characters without spaces")
    return key


def parse_env_keys(value: str | None) -> list[str]:
    """Keys from an ``ORPHEUS_API_KEYS``-style value: comma separated, blanks ignored."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


# --------------------------------------------------------------------------- keys file


def load_keys_file(path: str | Path) -> list[tuple[str, str, KeyLimits]]:
    """Read a TOML keys file: ``(name, sha256 hex, limits)`` per ``[[keys]]`` entry.

    Raises :class:`KeysFileError` naming the file and the entry for every defect:
    unreadable file, bad TOML, a missing or duplicate name, a digest that is not
    64 hex digits, a limit that is not a positive integer, or an unknown field.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read keys file: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"keys"}
    if unknown:
        raise KeysFileError(f"{path}: unknown top-level keys {sorted(unknown)}; expected [[keys]] entries")
    entries = data.get("keys", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise KeysFileError(f"{path}: 'keys' must be an array of tables ([[keys]])")
    out: list[tuple[str, str, KeyLimits]] = []
    seen_names: set[str] = set()
    seen_digests: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        where = f"{path}: [[keys]] entry {index}"
        extra = set(entry) - _KEY_ENTRY_FIELDS
        if extra:
            allowed = sorted(_KEY_ENTRY_FIELDS)
            raise KeysFileError(f"{where}: unknown fields {sorted(extra)}; allowed: {allowed}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise KeysFileError(f"{where}: 'name' is required; {_NAME_RULE}")
        where = f"{path}: key {name!r}"
        if name in seen_names:
            raise KeysFileError(f"{where}: the name is used twice")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _HEX64_RE.match(digest):
            raise KeysFileError(f"{where}: 'sha256' must be the key's SHA-256 as 64 hex digits")
        digest = digest.lower()
        if digest in seen_digests:
            raise KeysFileError(f"{where}: the same key is listed twice")
        limits = KeyLimits(
            max_concurrent_streams=_positive_int(entry, "max_concurrent_streams", where),
            requests_per_minute=_positive_int(entry, "requests_per_minute", where),
        )
        seen_names.add(name)
        seen_digests.add(digest)
        out.append((name, digest, limits))
    return out


def _positive_int(entry: Mapping[str, Any], field: str, where: str) -> int | None:
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KeysFileError(f"{where}: {field!r} must be a positive integer, got {value!r}")
    return value


def new_key_stanza(
    name: str, *, max_concurrent_streams: int | None = None, requests_per_minute: int | None = None
) -> tuple[str, str]:
    """A fresh random key and the ``[[keys]]`` TOML stanza that accepts it.

    The stanza holds only the key's SHA-256; show the key to its owner once.
    Raises :class:`KeysFileError` for a name the keys file would refuse.
    """
    if not _NAME_RE.match(name):
        raise KeysFileError(f"key name {name!r}: {_NAME_RULE}")
    key = NEW_KEY_PREFIX + secrets.token_urlsafe(NEW_KEY_BYTES)
    lines = ["[[keys]]", f'name = "{name}"', f'sha256 = "{sha256_hex(key)}"']
    for field, value in (
        ("max_concurrent_streams", max_concurrent_streams),
        ("requests_per_minute", requests_per_minute),
    ):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KeysFileError(f"{field} must be a positive integer, got {value!r}")
            lines.append(f"{field} = {value}")
        else:
            lines.append(f"# {field} = 4" if field == "max_concurrent_streams" else f"# {field} = 60")
    return key, "\n".join(lines) + "\n"
