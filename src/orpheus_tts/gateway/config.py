"""Gateway settings: one frozen value built at the edge (CLI flags, environment)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orpheus_tts.realtime.limits import RealtimeLimits
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.validation import DEFAULT_MAX_JSON_DEPTH
from orpheus_tts.worker.config import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_MAX_TIMEOUT_S,
)

__all__ = [
    "DEFAULT_DNS_REFRESH_S",
    "DEFAULT_DRAIN_GRACE_S",
    "DEFAULT_ENCODER_THREADS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_NO_WORKERS_RETRY_AFTER_S",
    "DEFAULT_PROBE_INTERVAL_S",
    "DEFAULT_QUOTA_LEASE_S",
    "DEFAULT_QUOTA_STORE_FAILURE",
    "DEFAULT_QUOTA_STORE_TIMEOUT_S",
    "DEFAULT_STALL_TIMEOUT_S",
    "DEFAULT_UPSTREAM_CLIENT",
    "DEFAULT_UPSTREAM_CONNECTIONS",
    "UPSTREAM_CLIENTS",
    "GatewayConfig",
]

DEFAULT_PROBE_INTERVAL_S = 1.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_DRAIN_GRACE_S = 30.0
DEFAULT_NO_WORKERS_RETRY_AFTER_S = 2.0
DEFAULT_UPSTREAM_CONNECTIONS = 1024
DEFAULT_STALL_TIMEOUT_S = 15.0
DEFAULT_ENCODER_THREADS = 4
DEFAULT_DNS_REFRESH_S = 5.0
DEFAULT_QUOTA_LEASE_S = 30.0
DEFAULT_QUOTA_STORE_TIMEOUT_S = 1.0
DEFAULT_QUOTA_STORE_FAILURE = "closed"
DEFAULT_UPSTREAM_CLIENT = "lean"
UPSTREAM_CLIENTS = ("lean", "httpx")


@dataclass(frozen=True)
class GatewayConfig:
    """Everything a gateway needs to know besides its keys."""

    workers: tuple[str, ...] = ()
    """Base URLs of the workers behind this gateway."""
    hedge_ttfb_ms: float | None = None
    """Start a backup request on another worker when no audio came after this long; None disables."""
    default_timeout_s: float = DEFAULT_DEADLINE_S
    """Deadline of a request that names none, from admission at the gateway."""
    max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S
    """Upper bound on a request's ``timeout_s``."""
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    """Longest ``text`` (or OpenAI ``input``) accepted."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted."""
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    """Deepest nesting of arrays and objects in a request body; deeper is 400 ``invalid_request``."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Workers tried for one request before the first chunk (failover), the first included."""
    probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S
    """How often each worker's ``/readyz`` is probed."""
    drain_grace_s: float = DEFAULT_DRAIN_GRACE_S
    """On shutdown, how long running streams may take to finish."""
    no_workers_retry_after_s: float = DEFAULT_NO_WORKERS_RETRY_AFTER_S
    """``Retry-After`` sent with 503 ``no_workers``."""
    upstream_connections: int = DEFAULT_UPSTREAM_CONNECTIONS
    """Connections kept open to each worker; all are kept alive, so a busy gateway never reconnects."""
    upstream_client: str = DEFAULT_UPSTREAM_CLIENT
    """How streams reach plain ``http://`` workers: ``lean`` (an HTTP/1.1 client on asyncio protocols
    and httptools; with the direct route, 1.6-1.9x less gateway CPU per stream in ``docs/operations.md``)
    or ``httpx`` (on aiohttp's pool)."""
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    """Longest silence of a worker's stream after its first audio; then the stream ends with
    ``worker_lost`` (retryable) and the silence counts against the worker."""
    encoder_threads: int = DEFAULT_ENCODER_THREADS
    """Threads the OpenAI endpoint's audio encoders (mp3, opus, aac, flac) run on, off the event loop."""
    worker_dns: tuple[str, ...] = ()
    """``NAME:PORT`` of headless Services: every address ``NAME`` resolves to is one worker, ``http://ADDRESS:PORT``."""
    dns_refresh_s: float = DEFAULT_DNS_REFRESH_S
    """How often the ``worker_dns`` names are resolved again: new addresses join, vanished ones drain."""
    dns_nameserver: str | None = None
    """``HOST[:PORT]`` of the nameserver for ``worker_dns`` names; ``None``: the system's (``/etc/resolv.conf``)."""
    quota_store: str | None = None
    """``redis://HOST:PORT/DB``: per-key quotas shared by every gateway on the store; ``None``: in this gateway."""
    quota_lease_s: float = DEFAULT_QUOTA_LEASE_S
    """How long a stream's slot in the shared store outlives a gateway that died; renewed while the stream runs."""
    quota_store_timeout_s: float = DEFAULT_QUOTA_STORE_TIMEOUT_S
    """Longest wait for one quota store operation before the store counts as unreachable."""
    quota_store_failure: str = DEFAULT_QUOTA_STORE_FAILURE
    """When the quota store is unreachable: ``closed`` refuses with 503 ``quota_store_unavailable``,
    ``open`` admits without quotas."""
    http: HttpSettings = field(default_factory=HttpSettings)
    """Connection limits, read timeouts and request checks (``HttpSettings``, below)."""
    realtime: RealtimeLimits = field(default_factory=RealtimeLimits)
    """Limits of each ``/v1/tts/realtime`` socket (``RealtimeLimits``, below)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form facts shown in ``/v1/system`` (e.g. how the stack was started)."""

    def __post_init__(self) -> None:
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ValueError("need 0 < default_timeout_s <= max_timeout_s")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_json_depth < 1:
            raise ValueError("max_json_depth must be at least 1")
        if not self.stall_timeout_s > 0:
            raise ValueError("stall_timeout_s must be a positive number of seconds")
        if self.encoder_threads < 1:
            raise ValueError("encoder_threads must be at least 1")
        if self.upstream_client not in UPSTREAM_CLIENTS:
            raise ValueError(f"upstream_client must be one of {UPSTREAM_CLIENTS}, got {self.upstream_client!r}")
        if self.quota_store_failure not in ("closed", "open"):
            raise ValueError(f"quota_store_failure must be 'closed' or 'open', got {self.quota_store_failure!r}")
        for name in ("dns_refresh_s", "quota_lease_s", "quota_store_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")

    def deadline_s(self, requested: float | None) -> float:
        return min(requested, self.max_timeout_s) if requested else self.default_timeout_s
