"""Streaming audio encoders: wire PCM (s16le, 24 kHz, mono) in, a file format out.

Each encoder takes PCM piece by piece and returns the encoded bytes that are
ready at once, so a response can start playing before synthesis ends::

    encoder = create_encoder("mp3")
    for pcm in chunks:
        send(encoder.encode(pcm))   # may be b"" while the codec fills a frame
    send(encoder.finish())          # the codec's tail; the file is complete

``finish()`` is what makes a file complete: a stream that fails must not call
it (the output would look whole), and should call ``close()`` instead.

``wav`` carries the streaming header whose sizes say "unknown"; ``pcm`` is the
raw wire audio; ``mp3``, ``opus`` (in Ogg), ``flac`` and ``aac`` (ADTS) are
encoded with PyAV (FFmpeg) into an unseekable in-memory sink, so the muxers
never go back to patch a header and every byte they write can be sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from orpheus_tts.audio import wav_header
from orpheus_tts.protocol import SAMPLE_RATE_HZ

__all__ = [
    "AAC_BIT_RATE_BPS",
    "AUDIO_FORMATS",
    "MP3_BIT_RATE_BPS",
    "OGG_PAGE_DURATION_US",
    "OPUS_BIT_RATE_BPS",
    "EncoderError",
    "StreamEncoder",
    "create_encoder",
    "media_type",
]

AUDIO_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
"""Every format :func:`create_encoder` knows, OpenAI's ``response_format`` values."""

MP3_BIT_RATE_BPS = 64_000
"""MP3 bit rate: transparent for 24 kHz mono speech."""
AAC_BIT_RATE_BPS = 64_000
"""AAC-LC bit rate."""
OPUS_BIT_RATE_BPS = 32_000
"""Opus bit rate: Opus at 32 kbit/s is near transparent for speech."""
OGG_PAGE_DURATION_US = 100_000
"""Longest audio an Ogg page holds before it is written out (microseconds), i.e. Opus's added latency."""

_MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": f"audio/pcm;rate={SAMPLE_RATE_HZ};channels=1",
}


class EncoderError(ValueError):
    """An unknown format, or an encoder used after ``finish()``/``close()``."""


def media_type(fmt: str) -> str:
    """The ``Content-Type`` of a stream in ``fmt``."""
    try:
        return _MEDIA_TYPES[fmt]
    except KeyError:
        known = ", ".join(AUDIO_FORMATS)
        raise EncoderError(f"unknown audio format {fmt!r}; expected one of {known}") from None


class StreamEncoder(Protocol):
    """PCM in, encoded bytes out as soon as the codec has them."""

    format: str
    """The format name (``mp3``, ``wav``…)."""
    media_type: str
    """``Content-Type`` of the output."""

    def encode(self, pcm: bytes) -> bytes:
        """Feed s16le 24 kHz mono PCM (any length); the bytes ready now, maybe ``b""``."""
        ...

    def finish(self) -> bytes:
        """Flush the codec and the container; the last bytes of a complete file."""
        ...

    def close(self) -> None:
        """Free the codec without completing the file (a failed or cancelled stream)."""
        ...


def create_encoder(fmt: str) -> StreamEncoder:
    """A fresh encoder for ``fmt`` (one of :data:`AUDIO_FORMATS`); raises :class:`EncoderError`."""
    media_type(fmt)  # validates
    if fmt == "pcm":
        return _PcmEncoder()
    if fmt == "wav":
        return _WavEncoder()
    return _AvEncoder(_AV_SETTINGS[fmt])


class _PcmEncoder:
    format = "pcm"
    media_type = _MEDIA_TYPES["pcm"]

    def __init__(self) -> None:
        self._done = False

    def encode(self, pcm: bytes) -> bytes:
        if self._done:
            raise EncoderError("encoder already finished")
        return bytes(pcm)

    def finish(self) -> bytes:
        self._done = True
        return b""

    def close(self) -> None:
        self._done = True


class _WavEncoder(_PcmEncoder):
    format = "wav"
    media_type = _MEDIA_TYPES["wav"]

    def __init__(self) -> None:
        super().__init__()
        self._header_sent = False

    def _header(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(None)

    def encode(self, pcm: bytes) -> bytes:
        if self._done:
            raise EncoderError("encoder already finished")
        return self._header() + bytes(pcm)

    def finish(self) -> bytes:
        # Even a stream without audio is a well-formed (empty) WAV file.
        out = self._header()
        self._done = True
        return out


# --------------------------------------------------------------------------- PyAV


@dataclass(frozen=True)
class _AvSettings:
    format: str
    container: str
    """FFmpeg muxer name."""
    codec: str
    bit_rate: int | None
    container_options: dict[str, str]


_AV_SETTINGS = {
    "mp3": _AvSettings("mp3", "mp3", "libmp3lame", MP3_BIT_RATE_BPS, {"id3v2_version": "0"}),
    # libopus takes 24 kHz input directly (Opus codes it at its 12 kHz audio
    # bandwidth), so no resampling to 48 kHz is needed; decoders output 48 kHz.
    "opus": _AvSettings("opus", "ogg", "libopus", OPUS_BIT_RATE_BPS, {"page_duration": str(OGG_PAGE_DURATION_US)}),
    # No padding block: it exists to rewrite the header in place, which a stream cannot do.
    "flac": _AvSettings("flac", "flac", "flac", None, {"metadata_header_padding": "0"}),
    "aac": _AvSettings("aac", "adts", "aac", AAC_BIT_RATE_BPS, {}),
}


class _Sink:
    """An unseekable in-memory file: the muxer writes, :meth:`take` collects."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._buffer += view
        return view.nbytes

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class _AvEncoder:
    """One FFmpeg encoder and muxer; packets are muxed (and flushed) as the codec emits them."""

    def __init__(self, settings: _AvSettings) -> None:
        import av

        self.format = settings.format
        self.media_type = _MEDIA_TYPES[settings.format]
        self._sink = _Sink()
        # flush_packets: write each packet through FFmpeg's I/O buffer at once.
        options = {"flush_packets": "1", **settings.container_options}
        self._container: Any = av.open(self._sink, mode="w", format=settings.container, options=options)
        try:
            stream: Any = self._container.add_stream(settings.codec, rate=SAMPLE_RATE_HZ, layout="mono")
            if settings.bit_rate is not None:
                stream.bit_rate = settings.bit_rate
        except BaseException:
            self._container.close()
            raise
        self._stream: Any = stream
        self._frame_factory: Callable[..., Any] = av.AudioFrame.from_ndarray
        self._pts = 0
        self._odd = b""
        self._state = "open"

    def encode(self, pcm: bytes) -> bytes:
        self._check_open()
        data = self._odd + bytes(pcm)
        usable = len(data) - len(data) % 2
        self._odd = data[usable:]
        if usable:
            samples = np.frombuffer(data[:usable], dtype="<i2").reshape(1, -1)
            frame = self._frame_factory(samples, format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE_HZ
            frame.pts = self._pts
            self._pts += samples.shape[1]
            self._mux(self._stream.encode(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        self._check_open()
        self._state = "finished"
        try:
            self._mux(self._stream.encode(None))
        finally:
            self._container.close()
        return self._sink.take()

    def close(self) -> None:
        if self._state == "open":
            self._state = "closed"
            try:
                self._container.close()
            except Exception:  # freeing resources of a stream that is being abandoned
                pass
            self._sink.take()

    def _mux(self, packets: Any) -> None:
        for packet in packets:
            self._container.mux(packet)

    def _check_open(self) -> None:
        if self._state != "open":
            raise EncoderError(f"encoder already {self._state}")

    def __del__(self) -> None:
        if getattr(self, "_state", None) == "open":
            self.close()
