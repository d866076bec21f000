"""Worker settings: one frozen value built at the edge (CLI flags, environment)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.validation import DEFAULT_MAX_JSON_DEPTH

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CHUNK_SAMPLES",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_TEXT_CHARS",
    "DEFAULT_MAX_TIMEOUT_S",
    "DEFAULT_RETRY_AFTER_S",
    "DEFAULT_WORKER_DRAIN_GRACE_S",
    "WorkerConfig",
]

DEFAULT_DEADLINE_S = 60.0
DEFAULT_MAX_TIMEOUT_S = 300.0
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_TEXT_CHARS = 10_000
DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_MAX_CHUNK_SAMPLES = 4_800
DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_WORKER_DRAIN_GRACE_S = 30.0


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to know besides its engine."""

    capacity: int | None = None
    """Requests synthesized at once; ``None`` takes the engine's capacity."""
    max_queue: int = DEFAULT_MAX_QUEUE
    """Requests that may wait for a slot; one more gets 503 ``overloaded``."""
    default_timeout_s: float = DEFAULT_DEADLINE_S
    """Deadline of a request that names none, in seconds from arrival."""
    max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S
    """Upper bound on a request's ``timeout_s``."""
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    """Longest ``text`` accepted; longer is 413 ``text_too_long``."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted; larger is 413 ``body_too_large``."""
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    """Deepest nesting of arrays and objects in a request body; deeper is 400 ``invalid_request``."""
    max_chunk_samples: int = DEFAULT_MAX_CHUNK_SAMPLES
    """Largest audio chunk frame, in samples (4 800 = 200 ms)."""
    retry_after_s: float = DEFAULT_RETRY_AFTER_S
    """``Retry-After`` sent with 503 ``overloaded``."""
    drain_grace_s: float = DEFAULT_WORKER_DRAIN_GRACE_S
    """On shutdown, how long running requests may take; then those still waiting for audio get
    503 ``overloaded`` and running streams a ``cancelled`` error frame, both retryable."""
    worker_id: str = "worker"
    """Name reported in ``metrics`` frames and ``/v1/system``."""
    http: HttpSettings = field(default_factory=HttpSettings)
    """Connection limits, read timeouts and request checks (``HttpSettings``, below)."""

    def __post_init__(self) -> None:
        if self.capacity is not None and self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must not be negative")
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ValueError("need 0 < default_timeout_s <= max_timeout_s")
        if self.max_json_depth < 1:
            raise ValueError("max_json_depth must be at least 1")
        if self.max_chunk_samples < 1:
            raise ValueError("max_chunk_samples must be at least 1")

    def deadline_s(self, requested: float | None) -> float:
        """The deadline a request gets: its own, capped, or the default."""
        return min(requested, self.max_timeout_s) if requested else self.default_timeout_s
