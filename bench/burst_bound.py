"""Embedded engine: the best any scheduler could do for N streams started at once.

``bench.concurrency`` measures what the worker's scheduler achieves; this
computes what no scheduler can beat on this machine, from the engine's own
cost of each segment of the same texts. N streams (``bench.concurrency``'s
texts in turn) arrive at once; a listener starts playing a stream
``jitter_ms`` after its first audio and runs dry if a segment arrives after
playback reached it. If every stream's first audio comes by ``F`` and none
runs dry, then for every time ``T`` the CPU work of all segments needed by
``T`` fits in ``cores × T`` CPU seconds (the demand bound). Letting every
stream start playing as late as the bound allows (at ``F``) only relaxes the
deadlines, so the smallest ``F`` that passes the test is a lower bound on the
worst time to first audio of any zero-dry schedule. The bound is generous to
the scheduler: segments cost their cheapest single-threaded CPU time (the
fewest CPU seconds per segment; two threads finish sooner but spend more),
two segments at once run as fast as one alone, and the gateway, the worker's
own code and the clients cost nothing. Each stream's audio is made for it
(no cache shared across requests, which would only help because the texts
repeat here).

Two segmentations of each text:

- **default**: what the engine cuts (``split_segments`` with the engine's
  ``first_clause_min_words``);
- **finest**: every clause boundary cut (comma, semicolon, colon, dash),
  the finest cut the prosody rule allows; shorter segments let a scheduler
  make less audio ahead.

Per segmentation: the smallest ``F`` (``f_min_s``), and the smallest speed-up
of the engine that brings it within the target (``--ttfa-ratio`` × the
single-stream TTFA ``bench.concurrency`` measured through ``serve``, read from
its JSON). Writes ``bench/results/burst_bound.json`` and ``burst_bound.png``.

    python -m bench.burst_bound [--streams 16] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from bench.common import machine, pyplot, save_figure, write_json
from bench.concurrency import TEXTS
from orpheus_tts.engines.base import validate_params
from orpheus_tts.engines.embedded import MAX_CLAUSE_SILENCE_S, PiperEngine, _settings
from orpheus_tts.engines.text import _CLAUSE_END, ends_sentence, split_segments
from orpheus_tts.protocol import SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES

SPEEDUPS = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0, 2.5]
"""Engine speed-ups the bound is recomputed for (segment costs divided by each)."""


@dataclass(frozen=True)
class Segment:
    text: str
    cost_s: float
    """Cheapest single-threaded CPU seconds of one run."""
    audio_s: float
    """Its audio, silence before the next segment excluded."""
    gap_after_s: float
    """The silence the engine puts before the next segment (0 for the last)."""


def finest(text: str) -> list[str]:
    """``text`` cut at every sentence end and every clause boundary."""
    out: list[str] = []
    for sentence in split_segments(text):
        start = 0
        for match in _CLAUSE_END.finditer(sentence):
            out.append(sentence[start : match.end(1)])
            start = match.end()
        out.append(sentence[start:])
    return [s for s in out if s.strip()]


def deadlines(
    streams: list[list[Segment]], f_s: float, jitter_s: float, speedup: float = 1.0
) -> list[tuple[float, float]]:
    """(needed by, CPU seconds) of every segment when each stream's first audio comes at ``f_s``."""
    jobs: list[tuple[float, float]] = []
    for segments in streams:
        played = 0.0
        for k, seg in enumerate(segments):
            jobs.append((f_s if k == 0 else f_s + jitter_s + played, seg.cost_s / speedup))
            played += seg.audio_s + seg.gap_after_s
    return sorted(jobs)


def cumulative(jobs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(T, CPU seconds of every job needed by T) at each deadline of ``jobs`` (sorted by deadline)."""
    work = 0.0
    out = []
    for due, cost in jobs:
        work += cost
        out.append((due, work))
    return out


def demand_ratio(jobs: list[tuple[float, float]], cores: int) -> tuple[float, float]:
    """The worst (work needed by T) ÷ (cores × T) over every deadline T, and that T. Above 1: infeasible."""
    worst, at = 0.0, 0.0
    for due, work in cumulative(jobs):
        ratio = work / (cores * due)
        if ratio > worst:
            worst, at = ratio, due
    return worst, at


def f_min(streams: list[list[Segment]], cores: int, jitter_s: float, speedup: float = 1.0) -> float:
    """The smallest worst-stream time to first audio that passes the demand bound (to 1 ms)."""
    low, high = 0.0, 1.0
    while demand_ratio(deadlines(streams, high, jitter_s, speedup), cores)[0] > 1:
        low, high = high, high * 2
    while high - low > 1e-3:
        mid = (low + high) / 2
        if demand_ratio(deadlines(streams, mid, jitter_s, speedup), cores)[0] > 1:
            low = mid
        else:
            high = mid
    return high


def measure(rounds: int) -> tuple[dict[str, list[Segment]], dict[str, float]]:
    """Each text's segments in both segmentations, with costs; and the first segment's time alone."""
    engine = PiperEngine(capacity=1, intra_op_threads=1)
    wide = PiperEngine(capacity=1)
    asyncio.run(engine.start())
    asyncio.run(wide.start())
    try:
        model = engine._require_model()
        settings = _settings(validate_params(engine.param_specs(), {}), model.voice.config)
        gap = min(settings.silence_s, MAX_CLAUSE_SILENCE_S)

        cut = engine.first_clause_min_words
        splits = {"default": lambda t: split_segments(t, first_clause_min_words=cut), "finest": finest}
        parts = {name: [split(text) for text in TEXTS] for name, split in splits.items()}
        firsts = [p[0] for p in parts["default"]]
        unique = sorted({part for texts in parts.values() for text in texts for part in text})

        def render(eng: PiperEngine, text: str) -> float:
            return len(eng._render(eng._require_model(), text, settings, np.random.default_rng(1)).pcm) / (
                SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ
            )

        for text in TEXTS:  # warm both sessions up before anything is timed
            render(engine, text)
            render(wide, text)
        cpu = dict.fromkeys(unique, float("inf"))
        audio = dict.fromkeys(unique, 0.0)
        alone = dict.fromkeys(firsts, float("inf"))
        # Rounds go over every segment in turn, so a slow spell of the machine hits them alike.
        for _ in range(rounds):
            for part in unique:
                cpu0 = time.process_time()
                audio[part] = render(engine, part)
                cpu[part] = min(cpu[part], time.process_time() - cpu0)
            # Wall time of each text's first segment alone, on every intra-op thread (what one stream gets).
            for part in firsts:
                t0 = time.perf_counter()
                render(wide, part)
                alone[part] = min(alone[part], time.perf_counter() - t0)
        texts: dict[str, list[Segment]] = {}
        for name, per_text in parts.items():
            for i, text_parts in enumerate(per_text):
                texts[f"{name}/{i}"] = [
                    Segment(
                        part,
                        cpu[part],
                        audio[part],
                        0.0 if k == len(text_parts) - 1 else (settings.silence_s if ends_sentence(part) else gap),
                    )
                    for k, part in enumerate(text_parts)
                ]
    finally:
        asyncio.run(engine.close())
        asyncio.run(wide.close())
    return texts, alone


def single_stream_ttfa_s(path: Path) -> float | None:
    """The deadline scheduler's single-stream TTFA from a ``bench.concurrency`` JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return float(data["targets"]["deadline"]["single_stream_ttfa_ms"]) / 1000
    except (OSError, KeyError, ValueError, TypeError):
        return None


def plot(result: dict[str, Any], streams_by_cut: dict[str, list[list[Segment]]], cores: int, jitter_s: float) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    target = result["target_f_s"]
    for name, streams in streams_by_cut.items():
        f = target if target is not None else result["segmentations"][name]["f_min_s"]
        demand = cumulative(deadlines(streams, f, jitter_s))
        left.step(
            [t for t, _ in demand],
            [w for _, w in demand],
            where="post",
            label=f"{name}: CPU s needed by T (first audio by {f:.2f} s)",
        )
        row = result["segmentations"][name]["by_speedup"]
        right.plot([r["speedup"] for r in row], [r["f_min_s"] for r in row], marker="o", label=name)
    end = max(left.get_xlim()[1], 1.0)
    left.plot([0, end], [0, cores * end], "k--", label=f"{cores} cores × T")
    left.set_xlim(0, min(end, 12))
    left.set_xlabel("T, seconds after the burst")
    left.set_ylabel("CPU seconds")
    left.set_title(f"{result['streams']} streams at once: demand against capacity")
    left.legend(fontsize=8)
    if target is not None:
        right.axhline(target, color="k", linestyle="--", label=f"target: {result['ttfa_ratio']:g} × single-stream TTFA")
    right.set_xlabel("engine speed-up over this machine")
    right.set_ylabel("lower bound on the worst TTFA, s")
    right.set_title("No schedule without a stream running dry does better")
    right.legend(fontsize=8)
    save_figure(fig, result["name"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=16, help="streams started at once")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per segment (its cheapest counts)")
    parser.add_argument("--jitter-ms", type=float, default=200.0, help="the listener's buffer")
    parser.add_argument("--ttfa-ratio", type=float, default=10.0, help="target: worst TTFA ÷ single-stream TTFA")
    parser.add_argument(
        "--single-from",
        type=Path,
        default=common.RESULTS_DIR / "concurrency.json",
        help="bench.concurrency JSON with the single-stream TTFA through serve",
    )
    parser.add_argument("--smoke", action="store_true", help="a reduced run (the test suite's)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default=None, help="results file name (default burst_bound, or burst_bound_smoke)")
    args = parser.parse_args(argv)
    if args.out:
        common.RESULTS_DIR = Path(args.out)
    if args.smoke:
        args.rounds = 1
    name = args.name or ("burst_bound_smoke" if args.smoke else "burst_bound")
    cores = os.cpu_count() or 1
    jitter_s = args.jitter_ms / 1000
    texts, alone = measure(args.rounds)
    single = single_stream_ttfa_s(args.single_from)
    target = None if single is None else args.ttfa_ratio * single
    result: dict[str, Any] = {
        "benchmark": "burst_bound",
        "name": name,
        "machine": machine(),
        "cores": cores,
        "streams": args.streams,
        "jitter_ms": args.jitter_ms,
        "rounds": args.rounds,
        "single_stream_ttfa_s": single,
        "single_stream_from": args.single_from.name,
        "ttfa_ratio": args.ttfa_ratio,
        "target_f_s": target,
        "first_segment_alone_s": alone,
        "first_segment_alone_max_s": max(alone.values()),
        "segmentations": {},
    }
    streams_by_cut: dict[str, list[list[Segment]]] = {}
    for cut in ("default", "finest"):
        per_text = [texts[f"{cut}/{i}"] for i in range(len(TEXTS))]
        streams = [per_text[i % len(per_text)] for i in range(args.streams)]
        streams_by_cut[cut] = streams
        cpu = sum(s.cost_s for segs in per_text for s in segs)
        audio = sum(s.audio_s for segs in per_text for s in segs)
        by_speedup = [{"speedup": x, "f_min_s": f_min(streams, cores, jitter_s, x)} for x in SPEEDUPS]
        entry: dict[str, Any] = {
            "texts": [[{"text": s.text, "cpu_s": s.cost_s, "audio_s": s.audio_s} for s in segs] for segs in per_text],
            "audio_s_per_cpu_s": audio / cpu,
            "f_min_s": by_speedup[0]["f_min_s"],
            "by_speedup": by_speedup,
        }
        if target is not None:
            ratio, at = demand_ratio(deadlines(streams, target, jitter_s), cores)
            entry["at_target"] = {"demand_over_capacity": ratio, "at_s": at, "feasible": ratio <= 1}
            entry["speedup_needed"] = next((r["speedup"] for r in by_speedup if r["f_min_s"] <= target), None)
        result["segmentations"][cut] = entry
        line = f"{cut:>8}: {entry['audio_s_per_cpu_s']:.1f} audio s per CPU s, worst TTFA without running dry ≥ "
        line += f"{entry['f_min_s']:.2f} s"
        if target is not None:
            at_t = entry["at_target"]
            line += (
                f"; at the target {target:.2f} s the work due by {at_t['at_s']:.2f} s is "
                f"{at_t['demand_over_capacity']:.2f}x what {cores} cores can do; "
                f"speed-up needed: {entry['speedup_needed'] or '>' + str(SPEEDUPS[-1])}"
            )
        print(line)
    path = write_json(name, result)
    plot(result, streams_by_cut, cores, jitter_s)
    print(f"wrote {path.name} and {name}.png in {common.RESULTS_DIR}")


if __name__ == "__main__":
    main()
