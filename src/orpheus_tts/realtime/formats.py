"""Realtime output formats: the 24 kHz wire PCM resampled (libsoxr) and, for telephony, G.711-coded (FFmpeg).

=============  ========  =====================================
format         rate      bytes per sample
=============  ========  =====================================
``pcm_24000``  24 kHz    2 (s16le, as v1; the default)
``pcm_16000``  16 kHz    2
``pcm_8000``   8 kHz     2
``ulaw_8000``  8 kHz     1 (G.711 μ-law, PyAV's ``pcm_mulaw``)
``alaw_8000``  8 kHz     1 (G.711 A-law, PyAV's ``pcm_alaw``)
=============  ========  =====================================

One :class:`OutputEncoder` per context: its resampler keeps its state from
piece to piece (no seams, no dropped samples) and :meth:`OutputEncoder.finish`
flushes what the filter still holds, so the output has exactly the samples a
whole-buffer resampling gives, up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from orpheus_tts.audio import StreamResampler
from orpheus_tts.protocol import SAMPLE_RATE_HZ

__all__ = [
    "DEFAULT_OUTPUT_FORMAT",
    "OUTPUT_FORMATS",
    "OutputEncoder",
    "OutputFormat",
    "UnknownFormatError",
    "parse_output_format",
]


class UnknownFormatError(ValueError):
    """An ``output_format`` this server does not produce."""


@dataclass(frozen=True)
class OutputFormat:
    """One realtime output format."""

    name: str
    rate_hz: int
    """Sample rate in Hertz."""
    codec: str | None
    """FFmpeg codec for G.711, ``None`` for s16le PCM."""

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.codec is None else 1


_FORMATS = {
    f.name: f
    for f in (
        OutputFormat("pcm_24000", SAMPLE_RATE_HZ, None),
        OutputFormat("pcm_16000", 16_000, None),
        OutputFormat("pcm_8000", 8_000, None),
        OutputFormat("ulaw_8000", 8_000, "pcm_mulaw"),
        OutputFormat("alaw_8000", 8_000, "pcm_alaw"),
    )
}
OUTPUT_FORMATS: tuple[str, ...] = tuple(_FORMATS)
"""Every realtime ``output_format``, the default first."""
DEFAULT_OUTPUT_FORMAT = OUTPUT_FORMATS[0]


def parse_output_format(name: object) -> OutputFormat:
    """The format called ``name`` (``None`` means the default); raises :class:`UnknownFormatError`."""
    if name is None:
        return _FORMATS[DEFAULT_OUTPUT_FORMAT]
    if isinstance(name, str) and name in _FORMATS:
        return _FORMATS[name]
    raise UnknownFormatError(f"unknown output_format {name!r}; expected one of {', '.join(OUTPUT_FORMATS)}")


class OutputEncoder:
    """24 kHz s16le in, the output format out, piece by piece."""

    def __init__(self, fmt: OutputFormat) -> None:
        self.format = fmt
        self._resampler = StreamResampler(SAMPLE_RATE_HZ, fmt.rate_hz)
        self._codec: Any = None
        if fmt.codec is not None:
            import av

            codec: Any = av.CodecContext.create(fmt.codec, "w")
            codec.sample_rate = fmt.rate_hz
            codec.layout = "mono"
            codec.format = "s16"
            codec.open()
            self._codec = codec
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        """The output for ``pcm`` (24 kHz s16le); the resampler may hold back a few ms until later pieces."""
        return self._code(self._resampler.process(pcm))

    def finish(self) -> bytes:
        """What the resampler and the codec still hold: the end of the audio."""
        return self._code(self._resampler.process(b"", last=True), last=True)

    def samples(self, data: bytes) -> int:
        """Samples in ``data`` of this format."""
        return len(data) // self.format.bytes_per_sample

    def _code(self, pcm: bytes, last: bool = False) -> bytes:
        if self._codec is None:
            return pcm
        import av

        out = bytearray()
        if pcm:
            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self.format.rate_hz
            frame.pts = self._pts
            self._pts += samples.shape[1]
            for packet in self._codec.encode(frame):
                out += bytes(packet)
        if last:
            for packet in self._codec.encode(None):
                out += bytes(packet)
        return bytes(out)
