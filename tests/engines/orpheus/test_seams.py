"""Crossfades between text segments."""

from __future__ import annotations

import numpy as np
import pytest

from orpheus_tts.engines.orpheus.seams import Crossfader


def run(fader: Crossfader, segments: list[list[np.ndarray]]) -> np.ndarray:
    out = []
    for pieces in segments:
        for piece in pieces:
            out.append(fader.push(piece.astype(np.float32)))
        fader.end_segment()
    out.append(fader.finish())
    return np.concatenate(out)


def test_overlap_add_at_the_seam_only() -> None:
    a = np.linspace(0.1, 0.5, 10)
    b = np.linspace(-0.5, -0.1, 6)
    out = run(Crossfader(4), [[a[:3], a[3:]], [b]])
    assert out.size == 10 + 6 - 4
    assert np.allclose(out[:6], a[:6]), "audio before the seam passes unchanged"
    t = (np.arange(4) + 0.5) / 4
    assert np.allclose(out[6:10], a[6:] * np.cos(np.pi / 2 * t) + b[:4] * np.sin(np.pi / 2 * t))
    assert np.allclose(out[10:], b[4:])


def test_seam_click_is_smoothed() -> None:
    a, b = np.full(4800, 0.8), np.full(4800, -0.8)
    hard = np.abs(np.diff(run(Crossfader(0), [[a], [b]]))).max()
    soft = np.abs(np.diff(run(Crossfader(480), [[a], [b]]))).max()
    assert hard == pytest.approx(1.6)
    assert soft < 0.01


def test_single_segment_is_untouched_and_complete() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 5000)
    out = run(Crossfader(480), [[x[:2048], x[2048:4096], x[4096:]]])
    assert np.array_equal(out, x.astype(np.float32))


def test_short_pieces_and_empty_segments() -> None:
    fader = Crossfader(100)
    out = run(fader, [[np.ones(30)], [], [np.ones(50)]])
    assert out.size == 50, "30 samples overlap fully into the next segment"
    assert run(Crossfader(100), []).size == 0
    with pytest.raises(ValueError, match="negative"):
        Crossfader(-1)
