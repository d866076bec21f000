"""Worker settings: one frozen value built at the edge (CLI flags, environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orpheus_tts.realtime.limits import RealtimeLimits
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.validation import DEFAULT_MAX_JSON_DEPTH

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CHUNK_SAMPLES",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_MAX_TEXT_CHARS",
    "DEFAULT_MAX_TIMEOUT_S",
    "DEFAULT_PLAYBACK_MARGIN_S",
    "DEFAULT_RETRY_AFTER_S",
    "DEFAULT_RTF_WINDOW_PIECES",
    "DEFAULT_SCHEDULER",
    "DEFAULT_TARGET_UTILIZATION",
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
DEFAULT_SCHEDULER: Literal["deadline", "fifo"] = "deadline"
DEFAULT_PLAYBACK_MARGIN_S = 2.0
"""A stream's next piece is due this long before its listener would run dry. It is also how far
behind an established stream a newcomer's first piece may be kept: a stream with less audio in hand
than this goes first. 1 s let many streams starting at once all get their first audio and then run
dry together, and 3 s delayed first audio (``bench/results/concurrency_margin_1.json``,
``concurrency_margin_3.json``)."""
DEFAULT_MAX_STREAMS = 64
DEFAULT_TARGET_UTILIZATION = 0.8
DEFAULT_RTF_WINDOW_PIECES = 64
DEFAULT_WORKER_DRAIN_GRACE_S = 30.0


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to know besides its engine."""

    capacity: int | None = None
    """Engine slots: pieces synthesized at once (``fifo``: whole requests); ``None`` takes the engine's capacity."""
    max_queue: int = DEFAULT_MAX_QUEUE
    """Requests that may wait for admission; one more gets 503 ``overloaded``."""
    scheduler: Literal["deadline", "fifo"] = DEFAULT_SCHEDULER
    """``deadline``: admission by estimated real-time stream capacity, each segment earliest playback
    deadline first; ``fifo``: each request holds a slot for its whole text, the rest wait in arrival order."""
    playback_margin_s: float = DEFAULT_PLAYBACK_MARGIN_S
    """``deadline``: a stream's next segment is due this many seconds before its playback would run dry."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """``deadline``: most streams admitted at once, whatever the capacity estimate says."""
    target_utilization: float = DEFAULT_TARGET_UTILIZATION
    """``deadline``: share of the engine's slots that admitted streams may need in real time (0-1]."""
    rtf_window_pieces: int = DEFAULT_RTF_WINDOW_PIECES
    """``deadline``: recent pieces whose real-time factor the capacity estimate is taken from."""
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
    realtime: RealtimeLimits = field(default_factory=RealtimeLimits)
    """Limits of each ``/v1/tts/realtime`` socket (``RealtimeLimits``, below)."""

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
        if self.scheduler not in ("deadline", "fifo"):
            raise ValueError(f"scheduler must be 'deadline' or 'fifo', got {self.scheduler!r}")
        if self.playback_margin_s < 0:
            raise ValueError("playback_margin_s must not be negative")
        if self.max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if not 0 < self.target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")
        if self.rtf_window_pieces < 1:
            raise ValueError("rtf_window_pieces must be at least 1")

    def deadline_s(self, requested: float | None) -> float:
        """The deadline a request gets: its own, capped, or the default."""
        return min(requested, self.max_timeout_s) if requested else self.default_timeout_s
