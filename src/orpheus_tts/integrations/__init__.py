"""Plugins for voice-agent frameworks, each behind its own extra.

- :mod:`orpheus_tts.integrations.livekit` (``pip install 'orpheus-tts[livekit]'``):
  a LiveKit Agents ``TTS``.
- :mod:`orpheus_tts.integrations.pipecat` (``pip install 'orpheus-tts[pipecat]'``):
  Pipecat TTS services.

Importing this package imports no framework; importing a plugin module without
its framework raises an ``ImportError`` that names the extra to install.
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(extra: str, framework: str, exc: ImportError) -> ImportError:
    """The error a plugin module raises when its framework is not installed."""
    error = ImportError(
        f"orpheus_tts.integrations.{extra} needs {framework}: pip install 'orpheus-tts[{extra}]' ({exc})"
    )
    error.name = exc.name
    return error
