"""Streaming encoders: every format decodes back to the input's length and frequencies, and streams."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from orpheus_tts.audio import wav_header
from orpheus_tts.encoding import AUDIO_FORMATS, EncoderError, create_encoder, media_type
from orpheus_tts.protocol import SAMPLE_RATE_HZ

AV_FORMATS = ("mp3", "opus", "aac", "flac")
LOSSLESS = ("wav", "pcm", "flac")
# Codec priming and padding: MP3 ~1.1k samples + frame rounding, AAC 1024 + frame rounding.
DURATION_SLACK_S = 0.15


def tones(*parts: tuple[float, float], amplitude: float = 0.3) -> bytes:
    """Consecutive sine tones ``(frequency Hz, seconds)`` as s16le 24 kHz PCM."""
    pieces = []
    for freq, seconds in parts:
        t = np.arange(round(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
        pieces.append(np.sin(2 * np.pi * freq * t) * amplitude)
    return bytes((np.concatenate(pieces) * 32767).round().astype("<i2").tobytes())


def decode_audio(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Decode a file in ``fmt`` to float mono samples in [-1, 1] and their rate."""
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768, SAMPLE_RATE_HZ
    if fmt == "wav":
        with wave.open(io.BytesIO(data)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE_HZ)
            frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768, SAMPLE_RATE_HZ
    pieces, rate = [], 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            array = frame.to_ndarray()
            if array.dtype == np.int16:
                array = array.astype(np.float64) / 32768
            elif array.dtype == np.int32:
                array = array.astype(np.float64) / 2**31
            pieces.append(array[0] if array.shape[0] > 1 or frame.format.is_planar else array.reshape(-1))
    assert pieces, f"no audio decoded from {len(data)} bytes of {fmt}"
    return np.concatenate(pieces).astype(np.float64), rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def encode_all(fmt: str, pcm: bytes, chunk_bytes: int) -> tuple[list[bytes], bytes]:
    encoder = create_encoder(fmt)
    pieces = [encoder.encode(pcm[i : i + chunk_bytes]) for i in range(0, len(pcm), chunk_bytes)]
    return pieces, encoder.finish()


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_round_trip_keeps_duration_and_frequencies(fmt: str) -> None:
    pcm = tones((300.0, 1.0), (1200.0, 1.0))
    # An odd chunk size: pieces split samples in half, as a byte stream may.
    pieces, tail = encode_all(fmt, pcm, 4801)
    samples, rate = decode_audio(b"".join(pieces) + tail, fmt)
    duration = len(samples) / rate
    assert 2.0 - 0.01 <= duration <= 2.0 + DURATION_SLACK_S
    # Each half holds its own tone, in order: the signal is the input's, not just its length.
    assert dominant_hz(samples[int(0.1 * rate) : int(0.9 * rate)], rate) == pytest.approx(300, abs=3)
    assert dominant_hz(samples[int(1.15 * rate) : int(1.9 * rate)], rate) == pytest.approx(1200, abs=3)
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.15)


@pytest.mark.parametrize("fmt", LOSSLESS)
def test_lossless_formats_are_exact(fmt: str) -> None:
    pcm = tones((440.0, 0.5))
    pieces, tail = encode_all(fmt, pcm, 999)
    samples, _ = decode_audio(b"".join(pieces) + tail, fmt)
    assert (np.round(samples * 32768).astype("<i2").tobytes()) == pcm


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_bytes_come_out_before_finish(fmt: str) -> None:
    """Streaming, not buffering: what is emitted before finish() already decodes to most of the audio."""
    pcm = tones((500.0, 6.0))
    chunk = SAMPLE_RATE_HZ // 10 * 2  # 100 ms
    pieces, tail = encode_all(fmt, pcm, chunk)
    assert pieces[0] or pieces[1], "nothing came out of the first 200 ms of audio"
    early = b"".join(pieces[: len(pieces) // 2])
    half, rate = decode_audio(early, fmt)
    assert len(half) / rate >= 3.0 - 0.4  # at most ~0.4 s held back (codec delay, Ogg page)
    before_finish, rate = decode_audio(b"".join(pieces), fmt)
    assert len(before_finish) / rate >= 6.0 - 0.4
    assert len(tail) < len(b"".join(pieces)) / 10


def test_wav_has_the_streaming_header() -> None:
    encoder = create_encoder("wav")
    first = encoder.encode(b"\x01\x00\x02\x00")
    assert first == wav_header(None) + b"\x01\x00\x02\x00"
    assert encoder.encode(b"\x03\x00") == b"\x03\x00"
    assert encoder.finish() == b""


def test_wav_without_audio_is_still_a_wav_file() -> None:
    assert create_encoder("wav").finish() == wav_header(None)


@pytest.mark.parametrize("fmt", AV_FORMATS)
def test_finish_without_audio_does_not_fail(fmt: str) -> None:
    encoder = create_encoder(fmt)
    assert isinstance(encoder.finish(), bytes)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_encoder_refuses_use_after_finish_or_close(fmt: str) -> None:
    finished = create_encoder(fmt)
    finished.encode(tones((440.0, 0.1)))
    finished.finish()
    with pytest.raises(EncoderError):
        finished.encode(b"\x00\x00")
    closed = create_encoder(fmt)
    closed.encode(tones((440.0, 0.1)))
    closed.close()
    closed.close()  # idempotent
    with pytest.raises(EncoderError):
        closed.encode(b"\x00\x00")


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(EncoderError, match=r"'ogg'.*mp3, opus, aac, flac, wav, pcm"):
        create_encoder("ogg")
    with pytest.raises(EncoderError):
        media_type("MP3")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg; codecs=opus"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
        ("pcm", "audio/pcm;rate=24000;channels=1"),
    ],
)
def test_media_types(fmt: str, expected: str) -> None:
    assert media_type(fmt) == expected
    assert create_encoder(fmt).media_type == expected


def test_decoders_see_the_declared_containers() -> None:
    """Each file is what its media type says (ADTS for aac, Ogg for opus…), not just decodable."""
    pcm = tones((440.0, 0.3))
    expected = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac"}
    for fmt, container_name in expected.items():
        pieces, tail = encode_all(fmt, pcm, len(pcm))
        with av.open(io.BytesIO(b"".join(pieces) + tail)) as container:
            assert container.format.name == container_name
            assert (
                container.streams.audio[0].codec_context.name
                in {
                    "mp3": ("mp3", "mp3float"),
                    "opus": ("opus", "libopus"),
                    "aac": ("aac",),
                    "flac": ("flac",),
                }[fmt]
            )
