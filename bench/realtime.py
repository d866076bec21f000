"""Realtime benchmark: an LLM's answer fed as tokens through the gateway, side by side with v1.

Workers (``orpheus-tts worker`` processes, the embedded voice by default)
behind an in-process gateway. In each round, in the same run:

- **v1, first sentence**: ``stream()`` of the answer's first sentence alone,
  the baseline for time to first audio;
- **v1, full text**: ``stream()`` of the whole answer;
- **realtime**: the answer's tokens sent at ``--tokens-per-s`` (an LLM's pace)
  to ``/v1/tts/realtime`` through the SDK, at 1 and at ``--sessions`` sessions
  at once. Measured: first token to first audio; playback gaps (a player that
  starts at the first audio and plays every sample in order: time it waits
  for audio that has not arrived); ``cancel`` to ``cancelled`` (a second
  context, cancelled after its first audio). Two gateways on the same
  workers take turns: the default, whose contexts' first segment may end at
  a one-word opening clause ("Sure,"), and one with that cut off
  (``--realtime-opening-min-words 0``), reported as
  ``realtime_without_opening``.

Targets (the issue's): first audio within 1.3x v1's time to first audio for
the first sentence alone; no playback gaps at 1 and 8 sessions on the
embedded engine; ``cancelled`` within 100 ms.

With the embedded engine the JSON's ``machine`` entry also says how fast the voice ran on
this machine just before (``embedded_engine_speed``, from
:func:`bench.engine_threads.engine_speed`): the capacity these figures are bound by.

Writes ``bench/results/realtime.json`` and ``realtime.png`` (timeline of text
in and audio out). ``--smoke`` runs a tiny version on the test engine (for the
suite) and writes ``realtime_smoke.*`` under ``--out``::

    python -m bench.realtime [--rounds 3] [--sessions 8]
    python -m bench.realtime --smoke --out /tmp/bench
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine, pyplot, summary
from bench.engine_threads import engine_speed

ANSWER = (
    "Sure, I can help with that. The museum opens at nine in the morning and closes at six. "
    "Tickets cost twelve dollars for adults, and children under ten get in for free. "
    "The best way to get there is the blue line, which stops right in front of the entrance. "
    "If you go on a weekday, it is much quieter than on the weekend. "
    "Do not miss the garden on the roof, it has a wonderful view of the city."
)
SMOKE_ANSWER = "Sure, I can help. The museum opens at nine. Tickets cost twelve dollars."
DEFAULT_TOKENS_PER_S = 30.0
CANCEL_TEXT = "This context is cancelled as soon as its first audio arrives, in the middle of a sentence. " * 3
RATE_HZ = 24_000
VARIANTS = {"realtime": 1, "realtime_without_opening": 0}
"""Realtime results key -> the gateway's ``opening_min_words``: the default (a context's first segment may
end at a one-word opening clause such as "Sure,") and that cut off, side by side on the same workers."""


def _tokens(text: str) -> list[str]:
    """Word-sized pieces with their trailing space, about the size of an LLM's tokens."""
    return re.findall(r"\S+\s*", text)


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


def playback_gaps(arrivals: list[tuple[float, float]]) -> tuple[float, int]:
    """Total seconds and count of waits of a player that starts at the first arrival.

    ``arrivals``: (time received, seconds of audio) in order.
    """
    if not arrivals:
        return 0.0, 0
    end = arrivals[0][0]
    waited, gaps = 0.0, 0
    for at, seconds in arrivals:
        if at > end + 1e-3:
            waited += at - end
            gaps += 1
            end = at
        end += seconds
    return waited, gaps


@contextlib.contextmanager
def stack(engine: str, workers: int, capacity: int | None, extra: Sequence[str] = ()) -> Iterator[dict[str, str]]:
    """The workers, and a gateway in front of them per variant of :data:`VARIANTS` (its base URL)."""
    from bench.common import orpheus_process
    from orpheus_tts.gateway.app import create_app
    from orpheus_tts.gateway.config import GatewayConfig
    from orpheus_tts.realtime.limits import RealtimeLimits
    from orpheus_tts.serving.local import run_server

    args = ["worker", "--engine", engine, *extra] + (["--capacity", str(capacity)] if capacity else [])
    if engine == "test":
        args.append("--enable-test-faults")
    with contextlib.ExitStack() as es:
        urls = [es.enter_context(orpheus_process(*args))[0] for _ in range(workers)]
        gateways = {}
        for variant, opening in VARIANTS.items():
            config = GatewayConfig(
                workers=tuple(urls), probe_interval_s=0.5, realtime=RealtimeLimits(opening_min_words=opening)
            )
            gateways[variant] = es.enter_context(run_server(create_app(config)))
        yield gateways


async def v1_ttfa(tts: Any, text: str, params: dict[str, Any]) -> float:
    started = time.perf_counter()
    first = None
    async for _ in tts.stream(text, **params):
        if first is None:
            first = time.perf_counter() - started
    return first if first is not None else float("nan")


async def realtime_run(tts: Any, text: str, tokens_per_s: float, params: dict[str, Any]) -> dict[str, Any]:
    """One context fed at ``tokens_per_s``; its timeline."""
    from orpheus_tts.sdk import Audio, Done

    tokens = _tokens(text)
    sent: list[tuple[float, int]] = []
    arrivals: list[tuple[float, float]] = []
    async with tts.realtime(**params) as session:
        started = time.perf_counter()

        async def feed() -> None:
            for i, token in enumerate(tokens):
                target = started + i / tokens_per_s
                await asyncio.sleep(max(0.0, target - time.perf_counter()))
                await session.send(token)
                sent.append((time.perf_counter() - started, len(token)))
            await session.end()

        feeder = asyncio.get_running_loop().create_task(feed())
        async for event in session:
            if isinstance(event, Audio):
                arrivals.append((time.perf_counter() - started, event.samples / RATE_HZ))
            elif isinstance(event, Done):
                break
        await feeder
    waited, gaps = playback_gaps(arrivals)
    return {
        "first_audio_s": arrivals[0][0] if arrivals else float("nan"),
        "last_token_s": sent[-1][0] if sent else 0.0,
        "audio_s": sum(s for _, s in arrivals),
        "gap_s": waited,
        "gaps": gaps,
        "sent": sent,
        "arrivals": arrivals,
    }


async def cancel_latency(tts: Any, params: dict[str, Any]) -> float:
    from orpheus_tts.sdk import Audio, Cancelled

    async with tts.realtime(**params) as session:
        await session.send(CANCEL_TEXT)
        cancelled_at = None
        async for event in session:
            if isinstance(event, Audio) and cancelled_at is None:
                cancelled_at = time.perf_counter()
                await session.cancel()
            elif isinstance(event, Cancelled):
                assert cancelled_at is not None
                return time.perf_counter() - cancelled_at
    return float("nan")


async def rounds(urls: dict[str, str], args: argparse.Namespace, text: str, params: dict[str, Any]) -> dict[str, Any]:
    from orpheus_tts.sdk import OrpheusTTS

    out: dict[str, Any] = {"v1_first_sentence_ttfa_s": [], "v1_full_ttfa_s": [], "cancel_s": []}
    out.update({variant: {} for variant in urls})
    timeline: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as es:
        clients = {v: await es.enter_async_context(OrpheusTTS(u, hedge_ttfb_ms=None)) for v, u in urls.items()}
        tts = clients["realtime"]
        for client in clients.values():
            await v1_ttfa(client, "Warm up.", params)  # load paths and connections once
        for _ in range(args.rounds):
            out["v1_first_sentence_ttfa_s"].append(await v1_ttfa(tts, _first_sentence(text), params))
            out["v1_full_ttfa_s"].append(await v1_ttfa(tts, text, params))
            for sessions in (1, args.sessions):
                for variant, client in clients.items():  # taking turns: machine noise hits both alike
                    runs = await asyncio.gather(
                        *(realtime_run(client, text, args.tokens_per_s, params) for _ in range(sessions))
                    )
                    bucket = out[variant].setdefault(str(sessions), {"first_audio_s": [], "gap_s": [], "gaps": []})
                    for run in runs:
                        bucket["first_audio_s"].append(run["first_audio_s"])
                        bucket["gap_s"].append(run["gap_s"])
                        bucket["gaps"].append(run["gaps"])
                    if sessions == 1 and variant == "realtime":
                        timeline = {"sent": runs[0]["sent"], "arrivals": runs[0]["arrivals"]}
            out["cancel_s"].append(await cancel_latency(tts, params))
    out["timeline"] = timeline
    return out


def report(raw: dict[str, Any], args: argparse.Namespace, text: str) -> dict[str, Any]:
    first_sentence = summary(raw["v1_first_sentence_ttfa_s"])
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        realtime = variants[variant] = {}
        for sessions, bucket in raw[variant].items():
            first = summary(bucket["first_audio_s"])
            realtime[sessions] = {
                "first_token_to_first_audio_s": first,
                "ratio_to_v1_first_sentence": first["median"] / first_sentence["median"],
                "playback_gap_s": summary(bucket["gap_s"]),
                "sessions_with_gaps": sum(1 for g in bucket["gaps"] if g),
                "sessions": len(bucket["gaps"]),
            }
    return {
        "benchmark": "realtime",
        "machine": machine(),
        "settings": {
            "engine": args.engine,
            "workers": args.workers,
            "capacity": args.capacity,
            "rounds": args.rounds,
            "tokens_per_s": args.tokens_per_s,
            "sessions": args.sessions,
            "tokens": len(_tokens(text)),
            "characters": len(text),
            "worker_args": args.worker_args,
        },
        "v1_first_sentence_ttfa_s": first_sentence,
        "v1_full_text_ttfa_s": summary(raw["v1_full_ttfa_s"]),
        **variants,
        "cancel_to_cancelled_s": summary(raw["cancel_s"]),
        "targets": {
            "first_audio_ratio_max": 1.3,
            "playback_gap_s_max": 0.0,
            "cancel_s_max": 0.1,
        },
    }


def plot(raw: dict[str, Any], data: dict[str, Any], name: str, out: Path) -> Path:
    plt = pyplot()
    timeline = raw["timeline"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    chars = 0
    xs, ys = [0.0], [0.0]
    for at, n in timeline["sent"]:
        chars += n
        xs.append(at)
        ys.append(chars)
    total_chars = max(chars, 1)
    ax.step(xs, [y / total_chars for y in ys], where="post", label="text sent (fraction of characters)")
    audio = 0.0
    ax2 = ax.twinx()
    ax_x, ax_y = [0.0], [0.0]
    for at, seconds in timeline["arrivals"]:
        audio += seconds
        ax_x.append(at)
        ax_y.append(audio)
    ax2.step(ax_x, ax_y, where="post", color="tab:orange", label="audio received (s)")
    if timeline["arrivals"]:
        first = timeline["arrivals"][0][0]
        ax2.plot([first, first + audio], [0, audio], color="tab:green", linestyle="--", label="playback (s)")
    v1 = data["v1_full_text_ttfa_s"]["median"]
    ax.axvline(timeline["sent"][-1][0] if timeline["sent"] else 0, color="grey", linestyle=":", label="last token")
    ax.set_xlabel("seconds since the first token")
    ax.set_ylabel("text sent")
    ax2.set_ylabel("audio seconds")
    ax.set_title(f"Realtime through the gateway ({data['settings']['engine']}); v1 full-text first audio {v1:.2f} s")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


async def measure(args: argparse.Namespace, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    params: dict[str, Any] = {"fault_piece_delay_ms": 5} if args.engine == "test" else {"seed": 1}
    with stack(args.engine, args.workers, args.capacity, shlex.split(args.worker_args)) as urls:
        raw = await rounds(urls, args, text, params)
    return raw, report(raw, args, text)


def write(raw: dict[str, Any], data: dict[str, Any], name: str, out: Path) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    plot(raw, data, name, out)
    for variant, sessions, r in ((v, n, r) for v in VARIANTS for n, r in data[v].items()):
        print(
            f"{variant}: {sessions} session(s): first audio {r['first_token_to_first_audio_s']['median']:.3f} s "
            f"({r['ratio_to_v1_first_sentence']:.2f}x v1 first sentence), "
            f"gaps {r['playback_gap_s']['median']:.3f} s median, {r['sessions_with_gaps']}/{r['sessions']} with gaps"
        )
    print(f"cancel -> cancelled {data['cancel_to_cancelled_s']['median'] * 1000:.1f} ms median")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="embedded")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--capacity", type=int, default=None, help="streams each worker synthesizes at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions of the second measurement")
    parser.add_argument("--tokens-per-s", type=float, default=DEFAULT_TOKENS_PER_S)
    parser.add_argument("--smoke", action="store_true", help="a tiny run on the test engine")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--name", default=None, help="results file name (default: realtime)")
    parser.add_argument("--worker-args", default="", help="more flags for the workers")
    args = parser.parse_args(argv)
    if args.smoke:
        args.engine, args.rounds, args.sessions = "test", 1, 2
    text = SMOKE_ANSWER if args.smoke else ANSWER
    speed = None if args.smoke or args.engine != "embedded" else engine_speed()
    raw, data = asyncio.run(measure(args, text))
    data["machine"]["embedded_engine_speed"] = speed
    write(raw, data, args.name or ("realtime_smoke" if args.smoke else "realtime"), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
