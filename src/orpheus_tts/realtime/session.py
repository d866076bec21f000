"""One realtime socket's contexts: the client's messages applied, the limits enforced.

:class:`RealtimeSession` knows nothing of the transport: it takes parsed
messages (:meth:`RealtimeSession.handle`) and leaves its replies in an
:class:`~orpheus_tts.realtime.outbox.Outbox`. What a segment's synthesis is
(the local engine, or a v1 request through the routing core) is the
``synthesize`` callable it is built with.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from orpheus_tts.protocol import ErrorCode, ServiceError
from orpheus_tts.realtime.context import Context, Openings, SynthesizeSegment
from orpheus_tts.realtime.formats import OUTPUT_FORMATS, UnknownFormatError, parse_output_format
from orpheus_tts.realtime.limits import RealtimeLimits
from orpheus_tts.realtime.messages import (
    Auth,
    Cancel,
    ClientMessage,
    End,
    Flush,
    MessageError,
    Start,
    Text,
    error_message,
)
from orpheus_tts.realtime.outbox import Outbox

__all__ = ["RealtimeSession", "ValidateStart"]

ValidateStart = Callable[[Start], None]
"""Checks a ``start``'s voice and parameters before the context opens; raises ``ServiceError``."""


class RealtimeSession:
    """The contexts of one socket; see the module docstring."""

    def __init__(
        self,
        synthesize: SynthesizeSegment,
        limits: RealtimeLimits,
        outbox: Outbox,
        validate: ValidateStart | None = None,
        on_context_finished: Callable[[Context], None] | None = None,
        openings: Openings | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self._on_context_finished = on_context_finished
        self.limits = limits
        self.outbox = outbox
        self._synthesize = synthesize
        self._validate = validate
        self.contexts: dict[str, Context] = {}
        self._openings = Openings() if openings is None else openings
        """Shared by the server's sockets: which contexts are starting (see :class:`Openings`)."""
        self._handled = 0

    @property
    def busy(self) -> bool:
        """Whether any context has audio to produce or send."""
        return any(c.busy for c in self.contexts.values())

    def ready_message(self) -> dict[str, object]:
        return {
            "type": "ready",
            "session_id": self.id,
            "formats": list(OUTPUT_FORMATS),
            "limits": self.limits.announce(),
        }

    def reject(self, error: MessageError) -> None:
        """Answer a message that could not be parsed."""
        self.outbox.put(error_message(error.code, error.message, error.context_id))

    def handle(self, message: ClientMessage) -> None:
        """Apply one client message."""
        self._handled += 1
        if isinstance(message, Auth):
            if self._handled > 1:  # as the first message it is accepted anywhere, even where no key is needed
                self.outbox.put(
                    error_message(ErrorCode.INVALID_REQUEST, "'auth' is only accepted as the first message")
                )
            return
        if isinstance(message, Start):
            self._open(message)
            return
        context = self.contexts.get(message.context_id)
        if context is None:
            self.outbox.put(
                error_message(
                    ErrorCode.INVALID_REQUEST,
                    f"no open context {message.context_id!r}; send 'start' first",
                    message.context_id,
                )
            )
            return
        if isinstance(message, Text):
            context.feed(message.text)
        elif isinstance(message, Flush):
            context.flush()
        elif isinstance(message, End):
            context.end()
        elif isinstance(message, Cancel):
            context.cancel()

    def close(self) -> None:
        """The socket is gone: stop every context's work."""
        for context in list(self.contexts.values()):
            context.close()
        self.outbox.close()

    def _open(self, start: Start) -> None:
        cid = start.context_id
        if cid in self.contexts:
            self.outbox.put(error_message(ErrorCode.INVALID_REQUEST, f"context {cid!r} is already open", cid))
            return
        if len(self.contexts) >= self.limits.max_contexts:
            self.outbox.put(
                error_message(
                    ErrorCode.INVALID_REQUEST,
                    f"{self.limits.max_contexts} contexts are open; end or cancel one first",
                    cid,
                )
            )
            return
        try:
            fmt = parse_output_format(start.output_format)
            if self._validate is not None:
                self._validate(start)
        except UnknownFormatError as exc:
            self.outbox.put(error_message(ErrorCode.INVALID_REQUEST, str(exc), cid))
            return
        except ServiceError as exc:
            self.outbox.put(error_message(exc.code, exc.message, cid))
            return
        self.contexts[cid] = Context(
            start, fmt, self.limits, self.outbox, self._synthesize, self._forget, self._openings
        )

    def _forget(self, context: Context) -> None:
        if self.contexts.get(context.id) is context:
            del self.contexts[context.id]
        if self._on_context_finished is not None:
            self._on_context_finished(context)
