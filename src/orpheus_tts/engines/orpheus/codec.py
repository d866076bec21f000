"""The SNAC decoder, made deterministic and independent of where a window starts.

SNAC's decoder adds Gaussian noise (``NoiseBlock``: ``x + randn() * linear(x)``)
after each upsampling stage, drawn afresh on every call. Two decodes of the same
codes then differ, and a streamed window can never equal the same frames
decoded offline. :class:`SnacCodec` swaps each noise block for one that reads
its noise from a fixed table indexed by *absolute* time step, so a frame gets
the same noise whichever window it is decoded in, and batches of windows at
different positions decode in one call. The noise keeps its statistics
(standard normal, scaled by the learned ``linear``); only its seed is pinned.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from orpheus_tts.engines.orpheus.tokens import frames_to_levels

__all__ = ["NOISE_PERIOD_FRAMES", "NOISE_SEED", "SAMPLES_PER_FRAME", "SnacCodec"]

SAMPLES_PER_FRAME = 2048
"""24 kHz samples per 7-token frame (85.33 ms)."""
NOISE_PERIOD_FRAMES = 512
"""The positional noise repeats every 512 frames (43.7 s); the tables take ~7 MB."""
NOISE_SEED = 0x0DDBA11


class _NoiseOffsets:
    """Absolute start frame of each batch row, shared by the noise blocks of one model."""

    def __init__(self) -> None:
        self.frames: torch.Tensor | None = None


class _PositionalNoise(nn.Module):
    """``x + noise[t] * linear(x)`` with ``noise`` indexed by absolute step ``t``."""

    table: torch.Tensor

    def __init__(self, linear: Any, steps_per_frame: int, offsets: _NoiseOffsets, seed: int) -> None:
        super().__init__()
        self.linear: Any = linear
        self.steps_per_frame = steps_per_frame
        self.offsets = offsets
        generator = torch.Generator().manual_seed(seed)
        table = torch.randn(steps_per_frame * NOISE_PERIOD_FRAMES, generator=generator)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, steps = x.shape
        offsets = self.offsets.frames
        start = (
            torch.zeros(batch, dtype=torch.long, device=x.device)
            if offsets is None
            else offsets.to(x.device) * self.steps_per_frame
        )
        index = (start[:, None] + torch.arange(steps, device=x.device)[None, :]) % self.table.numel()
        noise = self.table[index].unsqueeze(1).to(x.dtype)
        out: torch.Tensor = x + noise * self.linear(x)
        return out


class SnacCodec:
    """Decodes batches of SNAC frame windows; see the module docstring.

    ``decode`` is serialised by a lock (the noise offsets are per call), so it
    may be called from any thread; the streaming decoder calls it from one.
    """

    def __init__(self, model: Any, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        strides = list(getattr(model, "vq_strides", [4, 2, 1]))
        hop = int(np.prod(getattr(model, "decoder_rates", [8, 8, 4, 2])))
        if strides != [4, 2, 1] or strides[0] * hop != SAMPLES_PER_FRAME:
            raise ValueError(
                f"not a 24 kHz SNAC layout (vq_strides {strides}, hop {hop}): "
                f"Orpheus frames need vq_strides [4, 2, 1] and 2048 samples per frame"
            )
        self.samples_per_frame = SAMPLES_PER_FRAME
        self._offsets = _NoiseOffsets()
        self.noise_blocks = self._pin_noise(strides[0])
        self._lock = threading.Lock()

    def _pin_noise(self, latent_steps_per_frame: int) -> int:
        """Replace every decoder noise block; returns how many there were."""
        rate = latent_steps_per_frame
        replaced = 0
        for stage in self.model.decoder.model:
            block = getattr(stage, "block", None)
            if not isinstance(block, nn.Sequential):
                continue
            for index, layer in enumerate(block):
                if isinstance(layer, nn.ConvTranspose1d):
                    rate *= int(layer.stride[0])
                elif type(layer).__name__ == "NoiseBlock":
                    noise = _PositionalNoise(layer.linear, rate, self._offsets, NOISE_SEED + replaced)
                    block[index] = noise.to(self.device)
                    replaced += 1
        return replaced

    def decode(self, frames: NDArray[np.int64], start_frames: Sequence[int]) -> NDArray[np.float32]:
        """Audio for a batch of equal-length windows.

        ``frames`` has shape ``(batch, n, 7)`` (codes 0…4095); ``start_frames``
        gives each window's absolute first frame. Returns ``(batch, n * 2048)``
        float32 samples in [-1, 1].
        """
        if frames.ndim != 3 or frames.shape[2] != 7:
            raise ValueError(f"frames must have shape (batch, n, 7), got {frames.shape}")
        if len(start_frames) != frames.shape[0]:
            raise ValueError("one start frame per window is needed")
        levels = frames_to_levels(frames.astype(np.int64, copy=False))
        with self._lock, torch.inference_mode():
            codes = [torch.from_numpy(np.ascontiguousarray(level)).to(self.device) for level in levels]
            self._offsets.frames = torch.tensor(list(start_frames), dtype=torch.long, device=self.device)
            try:
                audio = self.model.decode(codes)
            finally:
                self._offsets.frames = None
            result: NDArray[np.float32] = np.asarray(audio[:, 0, :].float().cpu().numpy(), dtype=np.float32)
        return result

    def decode_all(self, frames: NDArray[np.int64]) -> NDArray[np.float32]:
        """Offline reference: all ``(n, 7)`` frames of a stream in one call."""
        audio: NDArray[np.float32] = self.decode(frames[None], [0])[0]
        return audio
