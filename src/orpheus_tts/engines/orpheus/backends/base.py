"""The token backend contract: prompt ids in, generated token ids out, as they come.

Exceptions::

    EngineError (orpheus_tts.engines.base)
    └── BackendError               the backend failed (a remote server, a crashed generation)
        ├── BackendUnavailableError the backend's package is not installed
        └── GenerationInterruptedError  a generation ended early, not by the model (retryable)
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol, runtime_checkable

from orpheus_tts.engines.base import EngineError
from orpheus_tts.engines.orpheus.prompt import Prompt, SamplingParams

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "Encoder",
    "GenerationInterruptedError",
    "TokenBackend",
    "import_optional",
]

Encoder = Callable[[str], list[int]]
"""Text to token ids, BOS included."""


class BackendError(EngineError):
    """Token generation failed."""


class BackendUnavailableError(BackendError):
    """The backend's optional package is not installed."""


class GenerationInterruptedError(BackendError):
    """A generation ended before its stop token and before ``max_tokens``: the audio would be cut off.

    Nothing about the request caused it (a server interrupted or lost it), so
    trying again may succeed.
    """

    retryable = True


@runtime_checkable
class TokenBackend(Protocol):
    """Generates Orpheus tokens. One instance serves all requests of an engine."""

    name: str
    """Backend name, as chosen with ``--backend``."""
    default_capacity: int
    """Requests the backend serves well at once."""

    async def start(self) -> None:
        """Load or connect. Called once before the first request."""
        ...

    async def close(self) -> None:
        """Release the model, threads and connections."""
        ...

    def encoder(self) -> Encoder | None:
        """The tokenizer for prompts, or ``None`` if the backend takes text prompts only."""
        ...

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        """Yield newly generated token ids, a few at a time, until a stop token or ``max_tokens``.

        Closing the iterator (or cancelling the task iterating it) stops the
        generation: the model does no more work for this request.
        """
        ...


def import_optional(module: str, package: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`BackendUnavailableError` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the {extra} backend needs the {package!r} package: pip install 'orpheus-tts[{extra}]' ({exc})"
        ) from exc
