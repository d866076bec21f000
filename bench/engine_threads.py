"""Embedded engine: how its intra-op threads are spread, alone and with two runs at once.

Three policies of the same engine, each with two slots (``capacity=2``):

- **wide**: every run uses ``intra_op_threads`` threads (the cores), also
  beside another run (``adaptive_threads=False``);
- **narrow**: every run uses one thread (``intra_op_threads=1``);
- **adaptive** (the default): a run that starts alone uses every thread, one
  that starts while another runs uses one.

For each, the same segments (the sentences and clauses of a few answers) are
synthesized one at a time (**alone**: a single stream's speed, what its time
to first audio depends on) and two at a time (**two at once**: the
throughput a loaded worker gets). Policies take turns each round, so
machine noise hits them alike. Per policy and mode: seconds of audio made
per wall-clock second and per CPU second of this process, and the median
time of a first segment. The ratios are against ``wide`` in the same run.

Writes ``bench/results/engine_threads.json`` and ``engine_threads.png``.

    python -m bench.engine_threads [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import machine, pyplot, save_figure, summary, write_json
from orpheus_tts.engines.embedded import VOICE_ID, PiperEngine
from orpheus_tts.engines.text import DEFAULT_FIRST_CLAUSE_MIN_WORDS, split_segments
from orpheus_tts.protocol import SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES

ANSWERS = [
    "Sure, I can help you with that. Your order left our warehouse on Monday morning. "
    "It should arrive at your door within three days.",
    "Thanks for calling, and welcome back. The weather today is sunny with a light breeze from the west. "
    "Tomorrow brings clouds and some rain in the afternoon.",
]
POLICIES = ("wide", "narrow", "adaptive")
MODES = {"alone": 1, "two_at_once": 2}


def _engine(policy: str) -> PiperEngine:
    if policy == "wide":
        return PiperEngine(capacity=2, adaptive_threads=False)
    if policy == "narrow":
        return PiperEngine(capacity=2, intra_op_threads=1)
    return PiperEngine(capacity=2)


async def _segment(engine: PiperEngine, text: str) -> tuple[float, float]:
    """(wall seconds, audio seconds) of one segment."""
    started = time.perf_counter()
    pcm = b"".join([p async for p in engine.synthesize(text, VOICE_ID, {"seed": 1})])
    return time.perf_counter() - started, len(pcm) / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ)


@dataclass
class Pass:
    """Every segment once: wall, CPU and audio seconds, and each segment's own time."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    audio_s: float = 0.0
    times: dict[str, float] = field(default_factory=dict)


async def _pass(engine: PiperEngine, segments: list[str], at_once: int) -> Pass:
    """Every segment once, ``at_once`` at a time."""
    queue = list(segments)
    result = Pass()

    async def lane() -> None:
        while queue:
            segment = queue.pop(0)
            wall, seconds = await _segment(engine, segment)
            result.times[segment] = wall
            result.audio_s += seconds

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(at_once)))
    result.wall_s, result.cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    return result


async def measure(rounds: int, policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    segments = [
        s for text in ANSWERS for s in split_segments(text, first_clause_min_words=DEFAULT_FIRST_CLAUSE_MIN_WORDS)
    ]
    first = {
        s for text in ANSWERS for s in split_segments(text, first_clause_min_words=DEFAULT_FIRST_CLAUSE_MIN_WORDS)[:1]
    }
    engines = {p: _engine(p) for p in policies}
    for engine in engines.values():
        await engine.start()
    try:
        for engine in engines.values():  # warm up
            await _pass(engine, segments[:2], 2)
        runs: dict[str, dict[str, list[Pass]]] = {p: {m: [] for m in MODES} for p in policies}
        for _ in range(rounds):
            for mode, at_once in MODES.items():
                for policy, engine in engines.items():
                    runs[policy][mode].append(await _pass(engine, segments, at_once))
    finally:
        for engine in engines.values():
            await engine.close()
    out: dict[str, Any] = {}
    for policy in policies:
        out[policy] = {}
        for mode in MODES:
            rs = runs[policy][mode]
            audio = sum(r.audio_s for r in rs)
            firsts = [t for r in rs for s, t in r.times.items() if s in first]
            out[policy][mode] = {
                "audio_s_per_wall_s": audio / sum(r.wall_s for r in rs),
                "audio_s_per_cpu_s": audio / sum(r.cpu_s for r in rs),
                "segment_s": summary([t for r in rs for t in r.times.values()]),
                "first_segment_s": summary(firsts),
            }
    for policy in policies if "wide" in out else ():
        for mode in MODES:
            row = out[policy][mode]
            base = out["wide"][mode]
            row["throughput_vs_wide"] = row["audio_s_per_wall_s"] / base["audio_s_per_wall_s"]
    return {"segments": len(segments), "policies": out}


def engine_speed(rounds: int = 1) -> dict[str, float]:
    """How fast the embedded voice runs on this machine now, with its default threads: audio
    seconds per wall-clock second, one segment at a time and two at once.

    Capacity-bound benchmarks record it beside their results, so that a run on a slower or busier
    machine reads as such (the same 2-core kind has measured from about 12 to about 22 audio s per
    s two at once on different days)."""
    rows = asyncio.run(measure(rounds, ("adaptive",)))["policies"]["adaptive"]
    return {f"{mode}_audio_s_per_s": rows[mode]["audio_s_per_wall_s"] for mode in MODES}


def plot(data: dict[str, Any]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.25
    for i, policy in enumerate(POLICIES):
        values = [data["policies"][policy][m]["audio_s_per_wall_s"] for m in MODES]
        ax.bar([x + (i - 1) * width for x in range(len(MODES))], values, width, label=policy)
    ax.set_xticks(range(len(MODES)), list(MODES))
    ax.set_ylabel("audio seconds per wall-clock second")
    ax.set_title(f"Embedded engine threads ({os.cpu_count()} cores)")
    ax.legend()
    save_figure(fig, "engine_threads")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="turns per policy and mode")
    args = parser.parse_args(argv)
    data = {"benchmark": "engine_threads", "machine": machine(), "rounds": args.rounds}
    data.update(asyncio.run(measure(args.rounds)))
    for policy in POLICIES:
        for mode in MODES:
            row = data["policies"][policy][mode]
            print(
                f"{policy:>9} {mode:>12}: {row['audio_s_per_wall_s']:5.1f} audio s per s "
                f"({row['throughput_vs_wide']:.2f}x wide), {row['audio_s_per_cpu_s']:5.1f} per CPU s, "
                f"first segment {row['first_segment_s']['median'] * 1000:.0f} ms"
            )
    print("wrote", write_json("engine_threads", data))
    plot(data)


if __name__ == "__main__":
    main()
