"""The client side of the ``orpheus-tts`` command: ``say``, ``voices``, ``system``, ``keys``.

``say`` speaks through a running gateway or worker (``--url``) or with an
engine in-process, writes the format its output name asks for, shows a
progress bar with audio seconds and real-time factor on a terminal (a plain
summary otherwise), and can play while it streams (``--play``). With
``--realtime`` it reads its text line by line as it arrives (``llm ... |
orpheus-tts say --realtime --play``) and speaks each line as soon as the
server's segmenter has a speakable piece of it, over ``/v1/tts/realtime``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orpheus_tts.protocol import SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES

__all__ = [
    "OUTPUT_FORMATS",
    "SayOptions",
    "format_for",
    "parse_params",
    "run_keys_new",
    "run_say",
    "run_system",
    "run_voices",
]

OUTPUT_FORMATS = {
    ".wav": "wav",
    ".mp3": "mp3",
    ".flac": "flac",
    ".ogg": "opus",
    ".opus": "opus",
    ".pcm": "pcm",
    ".aac": "aac",
}
"""Output file extension → encoder format."""
PROGRESS_MIN_CHARS = 1
"""Texts at least this long get a progress bar on a terminal."""
HTTP_TIMEOUT_S = 10.0


class CliError(Exception):
    """A one-line error for the user; no traceback."""


def format_for(output: str) -> str:
    """The audio format an output path asks for, by its extension."""
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise CliError(f"cannot tell the audio format of {output!r}: use one of {', '.join(sorted(OUTPUT_FORMATS))}")
    return OUTPUT_FORMATS[suffix]


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON when they parse as JSON (numbers, booleans), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


@dataclass
class SayOptions:
    text: str
    output: str | None
    voice: str | None
    params: dict[str, Any]
    url: str | None
    api_key: str | None
    play: bool
    engine: str
    engine_options: dict[str, Any]
    realtime: bool = False
    """Speak ``lines`` as they arrive, through the server's realtime socket."""
    lines: Iterator[str] | None = None
    """Where ``--realtime`` reads its text (standard input); ``None``: ``text``, line by line."""


class _Player:
    """Plays PCM on the default output device as it arrives (``sounddevice``)."""

    def __init__(self) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise CliError(f"--play needs the sounddevice package and an audio device: {exc}") from exc
        self._stream = sounddevice.RawOutputStream(samplerate=SAMPLE_RATE_HZ, channels=1, dtype="int16")
        self._stream.start()

    def write(self, pcm: bytes) -> None:
        self._stream.write(pcm)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


async def _remote_pcm(options: SayOptions) -> AsyncIterator[bytes]:
    from orpheus_tts.sdk import OrpheusTTS

    assert options.url is not None
    async with OrpheusTTS([options.url], api_key=options.api_key, hedge_ttfb_ms=None) as tts:
        async for chunk in tts.stream(options.text, voice=options.voice, **options.params):
            yield chunk


async def _realtime_pcm(options: SayOptions) -> AsyncIterator[bytes]:
    from orpheus_tts.sdk import OrpheusTTS

    if options.url is None:
        raise CliError("--realtime speaks through a running gateway or worker: give --url")
    lines = options.lines if options.lines is not None else iter(options.text.splitlines(keepends=True))

    async def arriving() -> AsyncIterator[str]:
        while True:
            # Blocking reads run on a thread, so audio keeps flowing while the next line is awaited.
            line = await asyncio.to_thread(next, lines, None)
            if line is None:
                return
            yield line if line.endswith("\n") else line + " "

    async with OrpheusTTS([options.url], api_key=options.api_key, hedge_ttfb_ms=None) as tts:
        async for chunk in tts.stream_text(arriving(), voice=options.voice, **options.params):
            yield chunk


async def _local_pcm(options: SayOptions) -> AsyncIterator[bytes]:
    from orpheus_tts.engines.base import EngineError, validate_params
    from orpheus_tts.engines.registry import create_engine

    engine = create_engine(options.engine, **options.engine_options)
    await engine.start()
    try:
        try:
            voice = engine.catalog.resolve(options.voice)
            params = validate_params(engine.param_specs(), options.params)
        except EngineError as exc:
            raise CliError(str(exc)) from exc
        async for piece in engine.synthesize(options.text, voice, params):
            yield piece
    finally:
        await engine.close()


async def _speak(
    options: SayOptions, sink: Callable[[bytes], None], progress: Callable[[int, float], None]
) -> tuple[int, float, float]:
    if options.realtime:
        source = _realtime_pcm(options)
    else:
        source = _remote_pcm(options) if options.url else _local_pcm(options)
    started = time.monotonic()
    first: float | None = None
    total = 0
    async for chunk in source:
        if first is None:
            first = time.monotonic() - started
        total += len(chunk)
        sink(chunk)
        progress(total, time.monotonic() - started)
    return total, first or 0.0, time.monotonic() - started


def run_say(options: SayOptions) -> int:
    from orpheus_tts.encoding import create_encoder

    if options.output is None and not options.play:
        raise CliError("give -o FILE, --play, or both")
    encoder = create_encoder(format_for(options.output)) if options.output else None
    out: IO[bytes] | None = open(options.output, "wb") if options.output else None  # noqa: SIM115
    player = _Player() if options.play else None
    done = False

    def sink(pcm: bytes) -> None:
        if encoder is not None and out is not None:
            out.write(encoder.encode(pcm))
        if player is not None:
            player.write(pcm)

    try:
        with _Progress(len(options.text)) as progress:
            total, first_s, elapsed_s = asyncio.run(_speak(options, sink, progress.update))
        if encoder is not None and out is not None:
            out.write(encoder.finish())
            if format_for(options.output or "") == "wav":  # a seekable file gets exact sizes
                from orpheus_tts.audio import wav_header

                out.seek(0)
                out.write(wav_header(total))
        done = True
    finally:
        if out is not None:
            out.close()
            if not done:
                Path(out.name).unlink(missing_ok=True)  # never leave a silently truncated file behind
        if player is not None:
            player.close()
        if encoder is not None:
            encoder.close()
    audio_s = total / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ)
    rtf = elapsed_s / audio_s if audio_s else 0.0
    where = f"wrote {options.output}" if options.output else "played"
    print(f"{where}: {audio_s:.2f} s of audio; first audio after {first_s * 1000:.0f} ms; real-time factor {rtf:.3f}")
    return 0


class _Progress:
    """A rich progress line on a terminal; nothing otherwise (the summary line follows)."""

    def __init__(self, text_chars: int) -> None:
        self._live: Any = None
        if sys.stderr.isatty() and text_chars >= PROGRESS_MIN_CHARS:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._live = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True
            )
            self._task = self._live.add_task("waiting for the first audio…", total=None)

    def __enter__(self) -> _Progress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, pcm_bytes: int, elapsed_s: float) -> None:
        if self._live is None:
            return
        audio_s = pcm_bytes / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ)
        rtf = elapsed_s / audio_s if audio_s else 0.0
        self._live.update(self._task, description=f"{audio_s:6.1f} s of audio · real-time factor {rtf:.3f}")


def _get_json(url: str, path: str, api_key: str | None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url.rstrip("/") + path, headers=headers, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        raise CliError(f"{url}{path} answered {response.status_code}: {response.text[:200]}")
    return response.json()


def run_voices(url: str | None, api_key: str | None, engine: str, engine_options: dict[str, Any]) -> int:
    from rich.console import Console
    from rich.table import Table

    if url:
        listing = _get_json(url, "/v1/voices", api_key)
        voices = listing.get("voices", [])
    else:
        from orpheus_tts.engines.registry import create_engine

        voices = create_engine(engine, **engine_options).catalog.listing()
    table = Table(title="Voices")
    for column in ("voice", "language", "default", "aliases", "description"):
        table.add_column(column)
    for v in voices:
        table.add_row(
            v["id"],
            v.get("language", ""),
            "yes" if v.get("default") else "",
            ", ".join(v.get("aliases", [])),
            v.get("description", ""),
        )
    Console().print(table)
    return 0


def run_system(url: str, api_key: str | None, as_json: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    system = _get_json(url, "/v1/system", api_key)
    if as_json:
        print(json.dumps(system, indent=2))
        return 0
    console = Console()
    console.print(
        f"[bold]{system.get('role', '?')}[/bold] {url} · version {system.get('version')} · "
        f"up {system.get('uptime_s', 0):.0f} s"
    )
    workers = system.get("workers")
    if workers is None:  # a worker
        console.print(
            f"engine {system.get('engine')} · capacity {system.get('capacity')} · "
            f"running {system.get('inflight')} · queued {system.get('queue_depth')}"
        )
        return 0
    table = Table(title=f"{len(workers)} workers")
    for column in ("worker", "healthy", "circuit", "latency ms", "in flight", "queue", "requests", "failures"):
        table.add_column(column)
    for w in workers:
        table.add_row(
            w["url"],
            "yes" if w.get("healthy") else "[red]no[/red]",
            str(w.get("breaker")),
            f"{w.get('ttfb_ewma_ms', 0):.1f}",
            str(w.get("inflight")),
            f"{w.get('queue_hint', 0):.1f}",
            str(w.get("requests")),
            str(w.get("failures")),
        )
    console.print(table)
    totals = system.get("totals", {})
    console.print(
        f"healthy {totals.get('healthy')}/{totals.get('workers')} · streams {system.get('active_streams')}"
        f" · auth {system.get('auth')}"
    )
    return 0


def run_keys_new(name: str, max_concurrent_streams: int | None, requests_per_minute: int | None) -> int:
    from orpheus_tts.gateway.keys import KeysFileError, new_key_stanza

    try:
        key, stanza = new_key_stanza(
            name, max_concurrent_streams=max_concurrent_streams, requests_per_minute=requests_per_minute
        )
    except KeysFileError as exc:
        raise CliError(str(exc)) from exc
    print(f"API key for {name} (shown once; give it to its owner): {key}")
    print("Add this to the gateway's keys file (--api-keys-file):\n")
    print(stanza)
    return 0
