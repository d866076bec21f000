"""API keys and per-key quotas for the gateway.

Keys come from ``--api-key`` (repeatable), ``ORPHEUS_API_KEYS`` (comma
separated) or a TOML keys file that holds each key's SHA-256, never the key
(see ``docs/operations-keys.md``). Only digests are kept in memory, and a
presented key is checked against every configured digest in constant time.

A request names its key with ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``. :meth:`Authenticator.authenticate` answers with the key's
*name* (for logs and metrics; the key itself is never logged) or raises
:class:`AuthError` (401 ``unauthorized``). :meth:`Authenticator.admit` then
applies the key's quotas: requests per minute over a sliding 60-second window
and concurrent streams, each a 429 ``rate_limited`` with ``Retry-After``.

Errors::

    ServiceError (protocol)
     ├── AuthError        401 unauthorized; .reason: missing | malformed | invalid
     └── QuotaError       429 rate_limited; .reason: requests_per_minute | concurrent_streams
    ValueError
     └── KeysFileError    a keys file that cannot be used (raised at startup)
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from orpheus_tts.protocol import ErrorCode, ServiceError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found]

__all__ = [
    "ANONYMOUS",
    "CONCURRENCY_RETRY_AFTER_S",
    "MAX_KEY_CHARS",
    "RATE_WINDOW_S",
    "Admission",
    "AuthError",
    "Authenticator",
    "Identity",
    "KeyLimits",
    "KeysFileError",
    "Lease",
    "QuotaError",
    "is_loopback_host",
    "load_keys_file",
    "new_key_stanza",
    "parse_env_keys",
    "sha256_hex",
]

logger = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
"""Length of the sliding window ``requests_per_minute`` counts over."""
MAX_KEY_CHARS = 512
"""Longest key accepted in a header or in configuration."""
CONCURRENCY_RETRY_AFTER_S = 1.0
"""``Retry-After`` sent when a key has all its concurrent streams open."""
NEW_KEY_BYTES = 32
"""Random bytes in a key made by :func:`new_key_stanza` (256 bits)."""
NEW_KEY_PREFIX = "ork_"
"""Prefix of generated keys, so secret scanners and people can recognise them."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_RULE = "a name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
_HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_KEY_ENTRY_FIELDS = frozenset({"name", "sha256", "max_concurrent_streams", "requests_per_minute"})

FailureListener = Callable[[str], None]
"""Called with the reason of every rejected credential (``missing``, ``malformed``, ``invalid``)."""


# --------------------------------------------------------------------------- errors


class AuthError(ServiceError):
    """401 ``unauthorized``; ``reason`` is a bounded label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, message)
        self.reason = reason


class QuotaError(ServiceError):
    """429 ``rate_limited`` with ``retry_after_s``; ``reason`` names the quota."""

    def __init__(self, reason: str, message: str, retry_after_s: float) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message, retry_after_s=retry_after_s)
        self.reason = reason


class KeysFileError(ValueError):
    """A keys file or key that cannot be used; the message says where and why."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class KeyLimits:
    """Quotas of one key; ``None`` means unlimited."""

    max_concurrent_streams: int | None = None
    """Streams this key may have open at once."""
    requests_per_minute: int | None = None
    """Requests this key may start in any 60-second window."""


@dataclass(frozen=True)
class Identity:
    """Who a request is: the key's name, never the key."""

    name: str
    """The key's configured name (``anonymous`` when auth is off); safe for logs and labels."""
    limits: KeyLimits = KeyLimits()
    """The key's quotas."""


ANONYMOUS = Identity("anonymous")
"""The identity of every request when no keys are configured."""


@dataclass(frozen=True)
class _KeyEntry:
    name: str
    digest: bytes
    limits: KeyLimits


def sha256_hex(key: str) -> str:
    """The hex SHA-256 of a key, as a keys file stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check_key(key: str, where: str) -> str:
    if not key or len(key) > MAX_KEY_CHARS or not key.isascii() or not key.isprintable() or " " in key:
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


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine.

    ``localhost``, ``127.0.0.0/8`` and ``::1`` are loopback; ``0.0.0.0``, ``::``,
    any other address and any other host name are not (names are not resolved).
    """
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- quotas


class Lease:
    """One admitted stream's hold on its key's concurrency slot.

    :meth:`release` is idempotent; a lease that is dropped without being
    released gives its slot back when it is garbage collected (and logs it).
    """

    def __init__(self, state: _KeyState | None, name: str) -> None:
        self._state = state
        self.name = name

    @property
    def released(self) -> bool:
        return self._state is None

    def release(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.release_stream()

    def __del__(self) -> None:
        if getattr(self, "_state", None) is not None:
            logger.warning("a stream slot of key %r was never released; releasing it now", self.name)
            self.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _KeyState:
    """A key's live counters; every method runs under the authenticator's lock."""

    def __init__(self, limits: KeyLimits, lock: threading.RLock, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.streams = 0
        self._lock = lock
        self._clock = clock
        # Start times inside the window; never longer than requests_per_minute.
        self._starts: collections.deque[float] = collections.deque()

    def try_acquire(self, name: str) -> None:
        limits = self.limits
        with self._lock:
            if limits.max_concurrent_streams is not None and self.streams >= limits.max_concurrent_streams:
                raise QuotaError(
                    "concurrent_streams",
                    f"key {name!r} already has {self.streams} streams open; "
                    f"its limit is {limits.max_concurrent_streams}",
                    retry_after_s=CONCURRENCY_RETRY_AFTER_S,
                )
            if limits.requests_per_minute is not None:
                now = self._clock()
                while self._starts and self._starts[0] <= now - RATE_WINDOW_S:
                    self._starts.popleft()
                if len(self._starts) >= limits.requests_per_minute:
                    retry_after = self._starts[0] + RATE_WINDOW_S - now
                    raise QuotaError(
                        "requests_per_minute",
                        f"key {name!r} made {len(self._starts)} requests in the last "
                        f"{RATE_WINDOW_S:.0f} s; its limit is {limits.requests_per_minute}",
                        retry_after_s=max(retry_after, 0.001),
                    )
                self._starts.append(now)
            self.streams += 1

    def release_stream(self) -> None:
        with self._lock:
            self.streams = max(0, self.streams - 1)


class Admission:
    """``async with auth.admit(identity) as lease:`` holds a stream slot for the block.

    Entering checks the quotas and raises :class:`QuotaError`; it never awaits,
    so a cancellation cannot land between taking the slot and returning it.
    Exiting (also on cancellation or error) releases the slot; exiting twice is
    harmless.
    """

    def __init__(self, authenticator: Authenticator, identity: Identity) -> None:
        self._authenticator = authenticator
        self._identity = identity
        self.lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        self.lease = self._authenticator.acquire(self._identity)
        return self.lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.lease is not None:
            self.lease.release()


# --------------------------------------------------------------------------- authenticator


class Authenticator:
    """Checks request credentials and applies per-key quotas; see the module docstring.

    With no keys configured, :attr:`enabled` is false and every request is
    :data:`ANONYMOUS` with no quotas.
    """

    def __init__(
        self,
        entries: Iterable[tuple[str, str, KeyLimits]] = (),
        *,
        on_failure: FailureListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``entries`` are ``(name, sha256 hex, limits)``; ``clock`` is a seam for tests."""
        self._entries: list[_KeyEntry] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        for name, digest_hex, limits in entries:
            if not _NAME_RE.match(name):
                raise KeysFileError(f"key name {name!r}: {_NAME_RULE}")
            if not _HEX64_RE.match(digest_hex):
                raise KeysFileError(f"key {name!r}: the SHA-256 must be 64 hex digits")
            digest = bytes.fromhex(digest_hex)
            if name in names:
                raise KeysFileError(f"key {name!r}: the name is used twice")
            if digest in digests:
                continue  # the same key from two sources: the first name wins
            names.add(name)
            digests.add(digest)
            self._entries.append(_KeyEntry(name, digest, limits))
        self.on_failure = on_failure
        """Called with the reason of each rejected credential; the app counts them."""
        self.failures: collections.Counter[str] = collections.Counter()
        """Rejected credentials so far, by reason."""
        # Re-entrant: a lease collected by the GC may release while this thread holds the lock.
        self._lock = threading.RLock()
        self._clock = clock
        self._states: dict[str, _KeyState] = {}

    @classmethod
    def from_keys(cls, keys: Iterable[str], **kwargs: Any) -> Authenticator:
        """Accept these plain keys, without quotas; each is named ``key-`` + 8 digits of its hash."""
        return cls.from_sources(keys=keys, **kwargs)

    @classmethod
    def from_sources(
        cls, keys: Iterable[str] = (), keys_file: str | Path | None = None, **kwargs: Any
    ) -> Authenticator:
        """Plain keys (``--api-key``, ``ORPHEUS_API_KEYS``) plus the entries of a keys file.

        Raises :class:`KeysFileError` for an unusable file or key.
        """
        entries = [] if keys_file is None else load_keys_file(keys_file)
        taken = {name for name, _, _ in entries}
        for index, key in enumerate(keys, start=1):
            digest = sha256_hex(_check_key(key, f"API key {index}"))
            name = f"key-{digest[:8]}"
            if name in taken:
                continue
            taken.add(name)
            entries.append((name, digest, KeyLimits()))
        return cls(entries, **kwargs)

    @property
    def enabled(self) -> bool:
        """Whether keys are configured (otherwise access is open)."""
        return bool(self._entries)

    @property
    def key_names(self) -> list[str]:
        return [entry.name for entry in self._entries]

    def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The identity of the key a request presents; raises :class:`AuthError` (401).

        ``headers`` is any mapping of header names to values (a Starlette
        ``Headers`` or a plain dict; names are matched case-insensitively).
        """
        if not self._entries:
            return ANONYMOUS
        key = self._presented_key(headers)
        digest = hashlib.sha256(key.encode("ascii")).digest()
        match: _KeyEntry | None = None
        for entry in self._entries:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(entry.digest, digest):
                match = entry
        if match is None:
            raise self._fail("invalid", "invalid API key")
        return Identity(match.name, match.limits)

    def _presented_key(self, headers: Mapping[str, str]) -> str:
        lowered = {k.lower(): v for k, v in headers.items()}
        authorization = lowered.get("authorization")
        x_api_key = lowered.get("x-api-key")
        bearer: str | None = None
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer":
                if x_api_key is None:
                    raise self._fail("malformed", "the Authorization header must be 'Bearer KEY'")
            elif not token.strip():
                raise self._fail("malformed", "the Authorization header has no key after 'Bearer'")
            else:
                bearer = token.strip()
        if x_api_key is not None:
            x_api_key = x_api_key.strip()
            if not x_api_key:
                raise self._fail("malformed", "the X-API-Key header is empty")
        if bearer is not None and x_api_key is not None and bearer != x_api_key:
            raise self._fail("malformed", "Authorization and X-API-Key carry different keys")
        key = bearer if bearer is not None else x_api_key
        if key is None:
            raise self._fail("missing", "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key'")
        if len(key) > MAX_KEY_CHARS or not key.isascii() or not key.isprintable() or " " in key:
            raise self._fail("malformed", "the API key is not a printable ASCII token")
        return key

    def _fail(self, reason: str, message: str) -> AuthError:
        self.failures[reason] += 1
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception:  # a broken metrics hook must not turn a 401 into a 500
                logger.exception("auth failure listener raised")
        return AuthError(reason, message)

    def acquire(self, identity: Identity) -> Lease:
        """Take a stream slot for ``identity`` now, or raise :class:`QuotaError` (429).

        The caller must :meth:`Lease.release` it when the stream ends; prefer
        :meth:`admit`, which does that on every exit path.
        """
        limits = identity.limits
        if limits.max_concurrent_streams is None and limits.requests_per_minute is None:
            return Lease(None, identity.name)
        with self._lock:
            state = self._states.get(identity.name)
            if state is None:
                state = self._states[identity.name] = _KeyState(limits, self._lock, self._clock)
        state.try_acquire(identity.name)
        return Lease(state, identity.name)

    def admit(self, identity: Identity) -> Admission:
        """An async context manager holding a stream slot for ``identity``; see :class:`Admission`."""
        return Admission(self, identity)

    def streams_open(self, name: str) -> int:
        """Streams the key called ``name`` holds now (for tests and ``/v1/system``)."""
        state = self._states.get(name)
        return 0 if state is None else state.streams
