"""Batched decoding for the transformers backend: one forward step for every active stream.

A stepping thread owns the batch. A new stream is prefilled on its own, then
joins the batch at the next step: the batch's key/value cache is left-padded
to a common length (padding masked out, each row keeps its own position ids),
and each step feeds every row's last token in one ``[rows, 1]`` forward call.
A row leaves when it samples a stop token, reaches ``max_tokens`` or is
cancelled; columns that only padding holds are trimmed. Sampling is done for
all rows at once in the order of the unbatched loop (repetition penalty over
prompt and output, temperature, top-k, top-p); seeded rows draw from their own
generator, so a seeded request repeats whatever shares its batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orpheus_tts.engines.orpheus.prompt import SamplingParams

__all__ = ["BatchedStepper"]


@dataclass
class _Row:
    prompt_ids: list[int]
    sampling: SamplingParams
    emit: Callable[[int], None]
    cancelled: threading.Event
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    generated: int = 0
    position: int = 0
    generator: Any = None


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    """(keys, values) per layer, ``[batch, heads, time, dim]``, across transformers' cache layouts."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


class BatchedStepper:
    """Steps all active streams of one model together; see the module docstring."""

    def __init__(
        self,
        model: Any,
        device: str,
        cache_arg: str,
        max_batch: int,
        constrain: Callable[[Any, list[int]], Any] | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.cache_arg = cache_arg
        self.max_batch = max_batch
        self.constrain = constrain
        """``constrain(scores, steps)``: masks each row's scores for its step (the audio-token grammar)."""
        self.steps = 0
        """Forward calls over the batch so far."""
        self.max_rows = 0
        """Most rows stepped in one call."""
        self._pending: list[_Row] = []
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="orpheus-batch", daemon=True)
        self._thread.start()

    def run(
        self, prompt_ids: list[int], sampling: SamplingParams, emit: Callable[[int], None], cancelled: threading.Event
    ) -> None:
        """Generate one stream in the batch; blocks until it ends (the caller's thread waits)."""
        row = _Row(list(prompt_ids), sampling, emit, cancelled)
        with self._lock:
            if self._closed:
                raise RuntimeError("the batch is closed")
            self._pending.append(row)
            self._lock.notify()
        while not row.done.wait(0.05):
            if cancelled.is_set() and not self._thread.is_alive():
                return
        if row.error is not None:
            raise row.error

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=30)

    # --- the stepping thread ---------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        rows: list[_Row] = []
        kv: list[tuple[Any, Any]] = []
        mask: Any = None
        logits: Any = None
        seen: Any = None
        try:
            with torch.inference_mode():
                while True:
                    with self._lock:
                        while not rows and not self._pending and not self._closed:
                            self._lock.wait()
                        if self._closed:
                            break
                        room = self.max_batch - len(rows)
                        joining, self._pending = self._pending[:room], self._pending[room:]
                    for row in joining:
                        if row.cancelled.is_set():
                            row.done.set()
                            continue
                        try:
                            row_kv, row_logits = self._prefill(row)
                        except BaseException as exc:
                            row.error = exc
                            row.done.set()
                            continue
                        kv, mask = self._join(kv, mask, row_kv, len(row.prompt_ids))
                        logits = row_logits if logits is None else torch.cat([logits, row_logits])
                        row_seen = torch.zeros((1, row_logits.shape[-1]), dtype=torch.bool, device=self.device)
                        row_seen[0, row.prompt_ids] = True
                        seen = row_seen if seen is None else torch.cat([seen, row_seen])
                        rows.append(row)
                    if not rows:
                        continue
                    tokens = self._sample(rows, logits, seen)
                    keep: list[int] = []
                    for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
                        row.emit(token)
                        row.generated += 1
                        seen[i, token] = True
                        if (
                            token in row.sampling.stop_token_ids
                            or row.generated >= row.sampling.max_tokens
                            or row.cancelled.is_set()
                        ):
                            row.done.set()
                        else:
                            keep.append(i)
                    if len(keep) < len(rows):
                        index = torch.tensor(keep, dtype=torch.long, device=self.device)
                        rows = [rows[i] for i in keep]
                        kv = [(k[index], v[index]) for k, v in kv]
                        mask, seen = mask[index], seen[index]
                        tokens = [tokens[i] for i in keep]
                        kv, mask = self._trim(kv, mask)
                    if not rows:
                        kv, mask, logits, seen = [], None, None, None
                        continue
                    logits, kv, mask = self._step(rows, tokens, kv, mask)
        except BaseException as exc:
            for row in [*rows, *self._pending]:
                row.error = exc
                row.done.set()
            raise
        finally:
            for row in rows:
                row.done.set()
            with self._lock:
                for row in self._pending:
                    row.done.set()

    def _prefill(self, row: _Row) -> tuple[list[tuple[Any, Any]], Any]:
        import torch

        ids = torch.tensor([row.prompt_ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        row.position = len(row.prompt_ids)
        if row.sampling.seed is not None:
            row.generator = torch.Generator(device=self.device).manual_seed(row.sampling.seed)
        return _layers(getattr(out, self.cache_arg)), out.logits[:, -1, :].float()

    def _join(self, kv: list[tuple[Any, Any]], mask: Any, row_kv: list[tuple[Any, Any]], length: int) -> Any:
        """The batch cache and mask with one more row, left-padded to a common length."""
        import torch
        import torch.nn.functional as F

        row_mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if not kv:
            return row_kv, row_mask
        width = max(mask.shape[1], length)

        def pad(t: Any, to: int) -> Any:
            return F.pad(t, (0, 0, to - t.shape[2], 0)) if t.shape[2] < to else t

        joined = [
            (torch.cat([pad(k, width), pad(rk, width)]), torch.cat([pad(v, width), pad(rv, width)]))
            for (k, v), (rk, rv) in zip(kv, row_kv, strict=True)
        ]
        mask = torch.cat([F.pad(mask, (width - mask.shape[1], 0)), F.pad(row_mask, (width - length, 0))])
        return joined, mask

    def _trim(self, kv: list[tuple[Any, Any]], mask: Any) -> tuple[list[tuple[Any, Any]], Any]:
        """Drop leading columns that are padding in every row."""
        first = int(mask.any(dim=0).int().argmax())
        if first == 0:
            return kv, mask
        return [(k[:, :, first:], v[:, :, first:]) for k, v in kv], mask[:, first:]

    def _step(self, rows: list[_Row], tokens: list[int], kv: list[tuple[Any, Any]], mask: Any) -> Any:
        import torch
        from transformers import DynamicCache

        ids = torch.tensor([[t] for t in tokens], dtype=torch.long, device=self.device)
        positions = torch.tensor([[row.position] for row in rows], dtype=torch.long, device=self.device)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=self.device)], dim=1)
        cache = DynamicCache(kv)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self.cache_arg: cache}
        )
        for row in rows:
            row.position += 1
        self.steps += 1
        self.max_rows = max(self.max_rows, len(rows))
        return out.logits[:, -1, :].float(), _layers(getattr(out, self.cache_arg)), mask

    def _sample(self, rows: list[_Row], logits: Any, seen: Any) -> list[int]:
        import torch

        scores = logits.clone()
        device = scores.device
        penalty = torch.tensor([[r.sampling.repetition_penalty] for r in rows], device=device)
        penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
        scores = torch.where(seen, penalised, scores)
        if self.constrain is not None:
            scores = self.constrain(scores, [r.generated for r in rows])
        greedy = scores.argmax(dim=-1)
        temperature = torch.tensor([[max(r.sampling.temperature, 1e-6)] for r in rows], device=device)
        scores = scores / temperature
        top_k = [r.sampling.top_k for r in rows]
        if any(k > 0 for k in top_k):
            k_max = min(max(top_k), scores.shape[-1])
            kth = scores.topk(k_max, dim=-1).values
            index = torch.tensor([[max(k, 1) - 1 if k > 0 else k_max - 1] for k in top_k], device=device)
            threshold = kth.gather(1, index)
            off = torch.tensor([[k <= 0] for k in top_k], device=device)
            scores = scores.masked_fill((scores < threshold) & ~off, float("-inf"))
        top_p = torch.tensor([[r.sampling.top_p] for r in rows], device=device)
        probs = torch.softmax(scores, dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True)
        before = ordered.cumsum(dim=-1) - ordered
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter(1, order, before >= top_p)
        probs = probs.masked_fill(drop, 0.0)
        out: list[int] = []
        unseeded = [i for i, r in enumerate(rows) if r.generator is None and r.sampling.temperature > 0]
        drawn = torch.multinomial(probs[unseeded], 1).flatten().tolist() if unseeded else []
        draws = dict(zip(unseeded, drawn, strict=True))
        for i, row in enumerate(rows):
            if row.sampling.temperature == 0:
                out.append(int(greedy[i]))
            elif row.generator is not None:
                out.append(int(torch.multinomial(probs[i : i + 1], 1, generator=row.generator)))
            else:
                out.append(int(draws[i]))
        return out
