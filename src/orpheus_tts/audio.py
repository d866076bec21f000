"""PCM helpers: the one audio format of the wire, WAV headers and resampling.

Audio on the wire is signed 16-bit little-endian mono at 24 kHz. Engines that
produce another rate resample with :func:`resample_int16` (libsoxr, a proper
band-limited resampler), never by interpolation.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from orpheus_tts.protocol import CHANNELS, SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "WAV_UNKNOWN_SIZE",
    "StreamResampler",
    "duration_s",
    "float_to_int16",
    "resample_int16",
    "wav_bytes",
    "wav_header",
]

WAV_UNKNOWN_SIZE = 0xFFFFFFFF
"""The size field a streamed WAV carries when the length is not yet known."""


def duration_s(pcm_bytes: int, rate_hz: int = SAMPLE_RATE_HZ) -> float:
    """Seconds of audio in ``pcm_bytes`` bytes of s16 mono PCM."""
    return pcm_bytes / (SAMPLE_WIDTH_BYTES * CHANNELS * rate_hz)


def float_to_int16(samples: NDArray[np.floating]) -> bytes:
    """Float samples in [-1, 1] to s16le bytes, clipping out-of-range values."""
    clipped = np.clip(samples, -1.0, 1.0)
    return bytes((clipped * 32767.0).round().astype("<i2").tobytes())


def wav_header(data_bytes: int | None, rate_hz: int = SAMPLE_RATE_HZ) -> bytes:
    """A 44-byte PCM WAV header; ``None`` gives the streaming unknown-length form."""
    if data_bytes is None:
        riff_size = data_size = WAV_UNKNOWN_SIZE
    else:
        riff_size, data_size = 36 + data_bytes, data_bytes
    byte_rate = rate_hz * CHANNELS * SAMPLE_WIDTH_BYTES
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,
        CHANNELS,
        rate_hz,
        byte_rate,
        CHANNELS * SAMPLE_WIDTH_BYTES,
        SAMPLE_WIDTH_BYTES * 8,
        b"data",
        data_size,
    )


def wav_bytes(pcm: bytes, rate_hz: int = SAMPLE_RATE_HZ) -> bytes:
    """A complete WAV file holding ``pcm``."""
    return wav_header(len(pcm), rate_hz) + pcm


def resample_int16(pcm: bytes, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> bytes:
    """Resample a whole s16le mono buffer with libsoxr (high quality); the end is flushed."""
    if from_hz == to_hz:
        return pcm
    import soxr

    out = soxr.resample(_int16_to_float(pcm), from_hz, to_hz, quality="HQ")
    return _float_to_int16_exact(out)


# libsoxr dithers integer output by default (TPDF noise, randomly seeded per
# resampler), so its int16 path gives slightly different bytes on every call.
# Resampling in float32 and rounding here keeps the output a pure function of
# the input, which seeded synthesis and byte-exact tests rely on.
_INT16_SCALE = 32768.0


def _int16_to_float(pcm: bytes) -> NDArray[np.float32]:
    samples: NDArray[np.float32] = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    samples *= np.float32(1.0 / _INT16_SCALE)
    return samples


def _float_to_int16_exact(samples: NDArray[np.floating]) -> bytes:
    scaled = np.round(np.asarray(samples, dtype=np.float32) * np.float32(_INT16_SCALE))
    return bytes(np.clip(scaled, -32768, 32767).astype("<i2").tobytes())


class StreamResampler:
    """Resample a stream piece by piece without seams between pieces."""

    def __init__(self, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> None:
        import soxr

        self._passthrough = from_hz == to_hz
        self._stream = (
            None if self._passthrough else soxr.ResampleStream(from_hz, to_hz, 1, dtype="float32", quality="HQ")
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Resampled audio for ``pcm``; pass ``last=True`` with the final piece to flush."""
        if self._stream is None:
            return pcm
        out = self._stream.resample_chunk(_int16_to_float(pcm), last=last)
        return _float_to_int16_exact(out)
