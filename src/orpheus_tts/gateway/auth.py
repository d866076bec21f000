"""Authentication: which key a request presents, checked in constant time.

A request names its key with ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``. :meth:`Authenticator.authenticate` answers with the key's
*name* (for logs and metrics; the key itself is never logged) or raises, in
one place (:meth:`Authenticator._fail`), the error that refuses it.
:meth:`Authenticator.acquire` then applies the key's quotas
(:mod:`orpheus_tts.gateway.quotas`). Keys, their files and their limits are
:mod:`orpheus_tts.gateway.keys`.

Errors::

    ServiceError (protocol)
     ├── AuthError                 401 unauthorized; .reason: missing | malformed | invalid
     ├── DuplicateCredentialError  400 invalid_request; .reason: duplicate (a credential header sent twice)
     └── QuotaError                429 rate_limited (quotas); .reason: requests_per_minute | concurrent_streams
    ValueError
     └── KeysFileError             a keys file or key that cannot be used (keys; raised at startup)
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orpheus_tts.gateway.keys import (
    KeyLimits,
    KeysFileError,
    check_digest,
    check_key,
    check_name,
    is_key_token,
    load_keys_file,
    sha256_hex,
)
from orpheus_tts.gateway.quotas import Admission, Lease, QuotaError, Quotas
from orpheus_tts.protocol import ErrorCode, ServiceError

__all__ = [
    "ANONYMOUS",
    "CREDENTIAL_HEADERS",
    "AuthError",
    "Authenticator",
    "DuplicateCredentialError",
    "Identity",
    "Lease",
    "QuotaError",
    "is_loopback_host",
]

logger = logging.getLogger(__name__)

CREDENTIAL_HEADERS = ("authorization", "x-api-key")
"""Headers that carry a key; each may appear at most once in a request."""

FailureListener = Callable[[str], None]
"""Called with the reason of every rejected credential (``missing``, ``malformed``, ``invalid``, ``duplicate``)."""


class AuthError(ServiceError):
    """401 ``unauthorized``; ``reason`` is a bounded label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, message)
        self.reason = reason


class DuplicateCredentialError(ServiceError):
    """400 ``invalid_request``: a credential header appears more than once (which one counts is ambiguous)."""

    reason = "duplicate"

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, message)


@dataclass(frozen=True)
class Identity:
    """Who a request is: the key's name, never the key."""

    name: str
    """The key's configured name (``anonymous`` when auth is off); safe for logs and labels."""
    limits: KeyLimits = field(default_factory=KeyLimits)
    """The key's quotas."""


ANONYMOUS = Identity("anonymous")
"""The identity of every request when no keys are configured."""


@dataclass(frozen=True)
class _KeyEntry:
    name: str
    digest: bytes
    limits: KeyLimits


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
            check_name(name)
            digest = check_digest(name, digest_hex)
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
        self.quotas = Quotas(clock)
        """Every key's quota state."""

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
            digest = sha256_hex(check_key(key, f"API key {index}"))
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
        lowered = self._credential_headers(headers)
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
        if not is_key_token(key):
            raise self._fail("malformed", "the API key is not a printable ASCII token")
        return key

    def _credential_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The credential headers by lower-case name; a name sent twice is refused (400)."""
        getlist = getattr(headers, "getlist", None)  # Starlette's Headers keep repeated fields
        found: dict[str, str] = {}
        for name in CREDENTIAL_HEADERS:
            if getlist is not None:
                values = list(getlist(name))
            else:
                values = [v for k, v in headers.items() if k.lower() == name]
            if len(values) > 1:
                raise self._fail(
                    "duplicate", f"the {name} header is sent {len(values)} times; send each credential once"
                )
            if values:
                found[name] = values[0]
        return found

    def _fail(self, reason: str, message: str) -> AuthError | DuplicateCredentialError:
        """The one place a credential is refused: counted by reason, then the error to raise."""
        self.failures[reason] += 1
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception:  # a broken metrics hook must not turn a 401 into a 500
                logger.exception("auth failure listener raised")
        if reason == DuplicateCredentialError.reason:
            return DuplicateCredentialError(message)
        return AuthError(reason, message)

    def acquire(self, identity: Identity) -> Lease:
        """Take a stream slot for ``identity`` now, or raise :class:`QuotaError` (429).

        The caller must :meth:`Lease.release` it when the stream ends; prefer
        :meth:`admit`, which does that on every exit path.
        """
        return self.quotas.acquire(identity.name, identity.limits)

    def admit(self, identity: Identity) -> Admission:
        """An async context manager holding a stream slot for ``identity``; see :class:`Admission`."""
        return Admission(lambda: self.acquire(identity))

    def streams_open(self, name: str) -> int:
        """Streams the key called ``name`` holds now (for tests and ``/v1/system``)."""
        return self.quotas.streams_open(name)


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
