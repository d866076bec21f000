"""Realtime output formats: streaming resampling without lost samples, G.711 through PyAV."""

from __future__ import annotations

import random
from typing import Any

import av
import numpy as np
import pytest

from orpheus_tts.audio import resample_int16
from orpheus_tts.realtime.formats import (
    DEFAULT_OUTPUT_FORMAT,
    OUTPUT_FORMATS,
    OutputEncoder,
    UnknownFormatError,
    parse_output_format,
)

RATE = 24_000


def _speechlike(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return bytes((wave * 32767).astype("<i2").tobytes())


def _encode_in_pieces(name: str, pcm: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    encoder = OutputEncoder(parse_output_format(name))
    out, i = bytearray(), 0
    while i < len(pcm):
        n = 2 * rng.randint(1, 3000)
        out += encoder.encode(pcm[i : i + n])
        i += n
    return bytes(out + encoder.finish())


@pytest.mark.parametrize("name", ["pcm_16000", "pcm_8000"])
def test_streamed_resampling_keeps_every_sample(name: str) -> None:
    pcm = _speechlike(1.3)
    rate = parse_output_format(name).rate_hz
    streamed = np.frombuffer(_encode_in_pieces(name, pcm, 1), dtype="<i2").astype(np.float64)
    whole = np.frombuffer(resample_int16(pcm, RATE, rate), dtype="<i2").astype(np.float64)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    # The same band-limited signal, not one with dropped or repeated samples.
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 200


def test_the_default_passes_the_wire_audio_through() -> None:
    pcm = _speechlike(0.5)
    assert DEFAULT_OUTPUT_FORMAT == "pcm_24000"
    assert _encode_in_pieces(DEFAULT_OUTPUT_FORMAT, pcm, 2) == pcm


@pytest.mark.parametrize(("name", "codec"), [("ulaw_8000", "pcm_mulaw"), ("alaw_8000", "pcm_alaw")])
def test_g711_is_one_byte_per_sample_and_decodes_back(name: str, codec: str) -> None:
    pcm = _speechlike(1.0)
    coded = _encode_in_pieces(name, pcm, 3)
    reference = np.frombuffer(_encode_in_pieces("pcm_8000", pcm, 3), dtype="<i2").astype(np.float64)
    assert len(coded) == len(reference)
    decoder: Any = av.CodecContext.create(codec, "r")
    decoder.sample_rate = 8000
    decoder.layout = "mono"
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in decoder.decode(av.Packet(coded))]).astype(np.float64)
    # G.711 keeps about 13 bits: a few percent of the signal's peak.
    assert np.max(np.abs(decoded - reference)) < 0.05 * np.max(np.abs(reference))


@pytest.mark.parametrize("bad", ["mp3", "pcm_44100", "", 5, ["pcm_24000"]])
def test_unknown_formats_are_refused_with_the_list(bad: object) -> None:
    with pytest.raises(UnknownFormatError) as info:
        parse_output_format(bad)
    assert all(name in str(info.value) for name in OUTPUT_FORMATS)
