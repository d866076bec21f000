"""Next-token sampling in NumPy, in the order and with the semantics of transformers' processors.

Repetition penalty over every token seen so far (prompt and generated: a
positive logit is divided by the penalty, a negative one multiplied), then
temperature, top-k, top-p, and a draw from the request's own generator
(seeded, or fresh entropy). Temperature 0 is greedy. The transformers backend
uses transformers' processors in this order; vLLM applies the same penalty
over prompt and output; so the backends that sample here agree with them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from orpheus_tts.engines.orpheus.prompt import SamplingParams

__all__ = ["TokenSampler"]


class TokenSampler:
    """Samples one request's tokens; remembers which tokens it has seen."""

    def __init__(self, sampling: SamplingParams, prompt_ids: list[int], vocab_size: int) -> None:
        self.sampling = sampling
        self.rng = np.random.default_rng(sampling.seed)
        self.seen = np.zeros(vocab_size, dtype=bool)
        self.seen[[t for t in prompt_ids if 0 <= t < vocab_size]] = True

    def __call__(self, logits: NDArray[np.float32]) -> int:
        s = self.sampling
        scores = np.asarray(logits, dtype=np.float64).copy()
        if s.repetition_penalty != 1.0:
            seen = scores[self.seen]
            scores[self.seen] = np.where(seen < 0, seen * s.repetition_penalty, seen / s.repetition_penalty)
        if s.temperature == 0:
            token = int(np.argmax(scores))
        else:
            scores /= s.temperature
            if 0 < s.top_k < scores.size:
                kth = np.partition(scores, -s.top_k)[-s.top_k]
                scores[scores < kth] = -np.inf
            probs = np.exp(scores - scores.max())
            probs /= probs.sum()
            if s.top_p < 1.0:
                order = np.argsort(-probs, kind="stable")
                before = np.cumsum(probs[order]) - probs[order]
                drop = order[before >= s.top_p]
                probs[drop] = 0.0
                probs /= probs.sum()
            token = int(self.rng.choice(probs.size, p=probs))
        if 0 <= token < self.seen.size:
            self.seen[token] = True
        return token
