"""PCM helpers: WAV headers that real readers accept, and resampling that keeps every sample."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from orpheus_tts.audio import (
    WAV_UNKNOWN_SIZE,
    StreamResampler,
    duration_s,
    float_to_int16,
    resample_int16,
    wav_bytes,
    wav_header,
)
from orpheus_tts.protocol import SAMPLE_RATE_HZ

PIPER_RATE_HZ = 22_050


def _tone(rate_hz: int, seconds: float, freq_hz: float = 440.0) -> bytes:
    t = np.arange(round(rate_hz * seconds)) / rate_hz
    return ((np.sin(2 * np.pi * freq_hz * t) * 12_000).astype("<i2")).tobytes()


def _dominant_hz(pcm: bytes, rate_hz: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate_hz)[int(np.argmax(spectrum))])


def test_wav_file_parses_with_the_wave_module() -> None:
    pcm = _tone(SAMPLE_RATE_HZ, 0.25)
    with wave.open(io.BytesIO(wav_bytes(pcm)), "rb") as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == SAMPLE_RATE_HZ
        assert wav.getnframes() == len(pcm) // 2
        assert wav.readframes(wav.getnframes()) == pcm


def test_wav_header_at_another_rate() -> None:
    pcm = _tone(PIPER_RATE_HZ, 0.1)
    with wave.open(io.BytesIO(wav_bytes(pcm, PIPER_RATE_HZ)), "rb") as wav:
        assert wav.getframerate() == PIPER_RATE_HZ
        assert wav.readframes(wav.getnframes()) == pcm


def test_streaming_header_carries_the_unknown_size_marker() -> None:
    header = wav_header(None)
    assert len(header) == 44
    riff_size, data_size = struct.unpack_from("<I", header, 4)[0], struct.unpack_from("<I", header, 40)[0]
    assert riff_size == data_size == WAV_UNKNOWN_SIZE
    assert header[:4] == b"RIFF"
    assert header[8:16] == b"WAVEfmt "
    assert header[36:40] == b"data"


def test_duration_of_pcm_bytes() -> None:
    assert duration_s(48_000) == pytest.approx(1.0)
    assert duration_s(44_100, PIPER_RATE_HZ) == pytest.approx(1.0)


def test_float_to_int16_clips_and_scales() -> None:
    out = np.frombuffer(float_to_int16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])), dtype="<i2")
    assert out.tolist() == [-32767, -32767, 0, 16384, 32767, 32767]


def test_resample_keeps_length_and_pitch() -> None:
    pcm = _tone(PIPER_RATE_HZ, 1.0)
    out = resample_int16(pcm, PIPER_RATE_HZ)
    assert len(out) % 2 == 0
    assert len(out) // 2 == SAMPLE_RATE_HZ
    assert _dominant_hz(out, SAMPLE_RATE_HZ) == pytest.approx(440.0, abs=2.0)


def test_resample_keeps_the_end_of_a_short_buffer() -> None:
    # The last samples of a sentence must survive: the output length is the full ratio, not less.
    pcm = _tone(PIPER_RATE_HZ, 0.3)
    out = np.frombuffer(resample_int16(pcm, PIPER_RATE_HZ), dtype="<i2")
    assert len(out) == round(len(pcm) // 2 * SAMPLE_RATE_HZ / PIPER_RATE_HZ)
    assert np.abs(out[-200:]).max() > 5_000


def test_resample_to_the_same_rate_is_identity() -> None:
    pcm = _tone(SAMPLE_RATE_HZ, 0.1)
    assert resample_int16(pcm, SAMPLE_RATE_HZ) == pcm
    assert StreamResampler(SAMPLE_RATE_HZ).process(pcm, last=True) == pcm


@pytest.mark.parametrize("piece_samples", [1, 441, 2000, 22_050])
def test_stream_resampler_matches_one_shot_without_seams(piece_samples: int) -> None:
    pcm = _tone(PIPER_RATE_HZ, 1.0)
    resampler = StreamResampler(PIPER_RATE_HZ)
    step = piece_samples * 2
    pieces = [resampler.process(pcm[i : i + step], last=i + step >= len(pcm)) for i in range(0, len(pcm), step)]
    assert all(len(p) % 2 == 0 for p in pieces)
    streamed = np.frombuffer(b"".join(pieces), dtype="<i2").astype(np.int32)
    whole = np.frombuffer(resample_int16(pcm, PIPER_RATE_HZ), dtype="<i2").astype(np.int32)
    assert len(streamed) == len(whole)
    assert np.abs(streamed - whole).max() <= 1


def test_resampling_is_a_pure_function_of_the_input() -> None:
    # libsoxr's own int16 path dithers with a random seed; ours must give the same bytes every time,
    # whatever the alignment of the buffer the samples sit in.
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(20_000) * 4_000).astype("<i2").tobytes()
    outputs = set()
    for offset in (0, 2, 4, 8, 16, 24, 32, 48):
        buffer = bytes(offset) + pcm + bytes(64)
        outputs.add(resample_int16(buffer[offset : offset + len(pcm)], PIPER_RATE_HZ))
        resampler = StreamResampler(PIPER_RATE_HZ)
        outputs.add(resampler.process(buffer[offset : offset + len(pcm)], last=True))
    assert len(outputs) == 1
