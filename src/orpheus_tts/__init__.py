"""Orpheus TTS: a streaming text-to-speech stack (SDK, gateway, workers, engines)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orpheus-tts")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
