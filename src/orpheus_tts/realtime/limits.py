"""The limits of one realtime socket: named settings, announced to the client in ``ready``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orpheus_tts.engines.segmenter import DEFAULT_OPENING_MIN_WORDS

__all__ = [
    "DEFAULT_BUFFER_DELAY_S",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_BUFFERED_CHARS",
    "DEFAULT_MAX_CONTEXTS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_OPENING_MAX_OTHERS",
    "DEFAULT_OPENING_MIN_WORDS",
    "DEFAULT_OUTBOX_MESSAGES",
    "DEFAULT_PIPELINE_SEGMENTS",
    "IDLE_CLOSE_CODE",
    "UNAUTHORIZED_CLOSE_CODE",
    "RealtimeLimits",
]

DEFAULT_MAX_CONTEXTS = 4
"""Contexts open at once on one socket."""
DEFAULT_MAX_BUFFERED_CHARS = 20_000
"""Characters of one context received and not yet handed to synthesis."""
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
"""Largest client message (bytes of its JSON text)."""
DEFAULT_IDLE_TIMEOUT_S = 60.0
"""Seconds without a client message, while no context has work, after which the socket is closed."""
DEFAULT_BUFFER_DELAY_S = 0.3
"""Seconds of no new text after which the complete words buffered so far are synthesized."""
DEFAULT_PIPELINE_SEGMENTS = 2
"""Segments of one context in synthesis at once: the one being sent and the next."""
DEFAULT_OPENING_MAX_OTHERS = 0
"""A context's first segment is cut at its opening clause only while at most this many other
contexts of the same server are between their first text and their second segment sent."""
DEFAULT_OUTBOX_MESSAGES = 64
"""Audio messages queued for a socket that is not reading before synthesis waits (backpressure)."""

UNAUTHORIZED_CLOSE_CODE = 4401
"""Close code after a missing or bad API key."""
IDLE_CLOSE_CODE = 4408
"""Close code after the idle timeout."""


@dataclass(frozen=True)
class RealtimeLimits:
    """Limits of one realtime socket."""

    max_contexts: int = DEFAULT_MAX_CONTEXTS
    """Contexts open at once."""
    max_buffered_chars: int = DEFAULT_MAX_BUFFERED_CHARS
    """Characters per context received and not yet handed to synthesis."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest client message, in bytes."""
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    """Seconds without a client message (while no context has work) before the socket is closed."""
    buffer_delay_s: float = DEFAULT_BUFFER_DELAY_S
    """Seconds of no new text after which buffered complete words are synthesized."""
    pipeline_segments: int = DEFAULT_PIPELINE_SEGMENTS
    """Segments of a context in synthesis at once."""
    outbox_messages: int = DEFAULT_OUTBOX_MESSAGES
    """Audio messages queued for the socket before synthesis waits."""
    opening_min_words: int = DEFAULT_OPENING_MIN_WORDS
    """Words before the clause boundary that may end a context's first segment (0: no such cut)."""
    opening_max_others: int = DEFAULT_OPENING_MAX_OTHERS
    """The opening cut applies only while at most this many other contexts of the server are
    starting (first text in, second segment not yet sent): a one-word first segment leaves its
    next one a fraction of a second, which a loaded engine cannot meet for many at once."""

    def __post_init__(self) -> None:
        for name in ("max_contexts", "max_buffered_chars", "max_message_bytes", "pipeline_segments", "outbox_messages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("idle_timeout_s", "buffer_delay_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("opening_min_words", "opening_max_others"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def announce(self) -> dict[str, Any]:
        """The limits as ``ready`` announces them."""
        return {
            "max_contexts": self.max_contexts,
            "max_buffered_chars": self.max_buffered_chars,
            "max_message_bytes": self.max_message_bytes,
            "idle_timeout_s": self.idle_timeout_s,
            "buffer_delay_s": self.buffer_delay_s,
        }
