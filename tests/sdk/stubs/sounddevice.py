"""A stand-in for the ``sounddevice`` package (no audio device in tests): it records what was played.

``play`` appends the int16 samples to the file named by ``ORPHEUS_TEST_PLAYED``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def play(data: Any, samplerate: int, blocking: bool = False, **_: Any) -> None:
    if samplerate != 24_000:
        raise ValueError(f"expected 24 kHz playback, got {samplerate}")
    samples = np.asarray(data)
    if samples.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {samples.dtype}")
    with open(os.environ["ORPHEUS_TEST_PLAYED"], "ab") as out:
        out.write(samples.tobytes())


def wait() -> None:
    return None
