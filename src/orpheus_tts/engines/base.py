"""The engine contract: what every speech engine declares and does.

An engine declares its voices, its parameter schema and its capacity, and
exposes one async generator, :meth:`Engine.synthesize`, that yields int16 PCM
at 24 kHz as soon as each piece is ready and stops promptly when cancelled.
Engines know nothing of HTTP.

An engine that can tell when each word is spoken also implements
:class:`TimedEngine`: ``synthesize_timed`` yields :class:`TimedPiece` (the
same audio, with the words it says). :func:`supports_timestamps` tells which
engines do.

Exceptions::

    EngineError                     synthesis failed (engine_error): the engine's fault
    └── EngineInputError            the request's input cannot be synthesized (invalid_request)
        ├── UnknownVoiceError       voice not offered (unknown_voice)
        └── InvalidParameterError   a parameter failed the schema (invalid_request)

An :class:`EngineInputError` is the request's fault, not the engine's: the
worker answers it with a 4xx (before audio) or an ``invalid_request`` error
frame (after), which no router counts against the worker or retries
elsewhere. Any other exception is the engine's fault (``engine_error``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_VOICE_ALIASES",
    "Engine",
    "EngineError",
    "EngineInputError",
    "InvalidParameterError",
    "ParamSpec",
    "PieceEngine",
    "TimedEngine",
    "TimedPiece",
    "UnknownVoiceError",
    "Voice",
    "VoiceCatalog",
    "WordTiming",
    "close_iterator",
    "pieces_of",
    "supports_timestamps",
    "validate_params",
]

ParamType = Literal["float", "int", "bool", "str"]

OPENAI_VOICE_NAMES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
ORPHEUS_ENGLISH_VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
DEFAULT_VOICE_ALIASES: tuple[str, ...] = OPENAI_VOICE_NAMES + ORPHEUS_ENGLISH_VOICES
"""Names that, by default, resolve to an engine's default voice when it lacks them."""


class EngineError(Exception):
    """Synthesis failed inside the engine."""

    retryable = False
    """Whether the same request may succeed if tried again (the ``retryable`` of its ``engine_error``)."""


class EngineInputError(EngineError):
    """The request's input (its text, voice or a parameter) cannot be synthesized: not the engine's fault."""


class UnknownVoiceError(EngineInputError):
    """The requested voice is not offered; ``valid`` lists those that are."""

    def __init__(self, voice: str, valid: Iterable[str]) -> None:
        self.voice = voice
        self.valid = sorted(valid)
        super().__init__(f"unknown voice {voice!r}; valid voices: {', '.join(self.valid)}")


class InvalidParameterError(EngineInputError):
    """A generation parameter has the wrong type, range or name."""

    def __init__(self, key: str, problem: str, accepted: Iterable[str]) -> None:
        self.key = key
        self.accepted = sorted(accepted)
        super().__init__(f"parameter {key!r} {problem}; accepted parameters: {', '.join(self.accepted)}")


@dataclass(frozen=True)
class Voice:
    """A voice an engine offers."""

    id: str
    """The name a request passes as ``voice``."""
    language: str = "en-US"
    """BCP-47 language tag."""
    description: str = ""
    """One line for people choosing a voice."""
    aliases: tuple[str, ...] = ()
    """Other names that resolve to this voice."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "language": self.language,
            "description": self.description,
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class ParamSpec:
    """One generation parameter an engine accepts."""

    name: str
    type: ParamType
    default: Any
    """Value used when the request omits the parameter (``None``: engine decides)."""
    minimum: float | None = None
    """Smallest accepted value, inclusive (numbers only)."""
    maximum: float | None = None
    """Largest accepted value, inclusive (numbers only)."""
    description: str = ""
    effective: bool = True
    """False for parameters accepted for compatibility that change nothing."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "description": self.description,
            "effective": self.effective,
        }

    def check(self, value: Any, accepted: Iterable[str]) -> Any:
        """``value`` coerced to this parameter's type; raises :class:`InvalidParameterError`."""
        if value is None:
            return self.default
        if self.type == "bool":
            if not isinstance(value, bool):
                raise InvalidParameterError(self.name, f"must be a boolean, got {value!r}", accepted)
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise InvalidParameterError(self.name, f"must be a string, got {value!r}", accepted)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidParameterError(self.name, f"must be a number, got {value!r}", accepted)
        if isinstance(value, int) and abs(value) > sys.float_info.max:
            raise InvalidParameterError(self.name, "is too large a number", accepted)
        if self.type == "int":
            if isinstance(value, float) and not value.is_integer():
                raise InvalidParameterError(self.name, f"must be an integer, got {value!r}", accepted)
            value = int(value)
        else:
            if not math.isfinite(value):
                raise InvalidParameterError(self.name, f"must be finite, got {value!r}", accepted)
            value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise InvalidParameterError(self.name, f"must be >= {self.minimum}, got {value}", accepted)
        if self.maximum is not None and value > self.maximum:
            raise InvalidParameterError(self.name, f"must be <= {self.maximum}, got {value}", accepted)
        return value


def validate_params(specs: Iterable[ParamSpec], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``raw`` against ``specs``: every spec gets a value, unknown keys are rejected."""
    by_name = {spec.name: spec for spec in specs}
    accepted = list(by_name)
    for key in raw:
        if key not in by_name:
            raise InvalidParameterError(key, "is not a parameter of this engine", accepted)
    return {name: spec.check(raw.get(name), accepted) for name, spec in by_name.items()}


@dataclass
class VoiceCatalog:
    """An engine's voices plus configured aliases; resolves request names to voice ids."""

    voices: list[Voice]
    default: str
    """Voice id used when a request names none."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias → voice id, from configuration."""

    def resolve(self, name: str | None) -> str:
        if name is None:
            return self.default
        ids = {v.id for v in self.voices}
        if name in ids:
            return name
        lowered = name.lower()
        for table in (self.aliases, {a: v.id for v in self.voices for a in v.aliases}):
            if name in table:
                return table[name]
            if lowered in table:
                return table[lowered]
        raise UnknownVoiceError(name, ids | set(self.aliases))

    def listing(self) -> list[dict[str, Any]]:
        by_id: dict[str, list[str]] = {v.id: list(v.aliases) for v in self.voices}
        for alias, target in self.aliases.items():
            by_id.setdefault(target, []).append(alias)
        return [
            {**v.to_json(), "aliases": sorted(set(by_id[v.id])), "default": v.id == self.default} for v in self.voices
        ]


@runtime_checkable
class Engine(Protocol):
    """What the worker needs from a speech engine."""

    name: str
    """Short engine name, reported in ``/v1/system`` and metrics frames."""
    capacity: int
    """How many requests the engine runs at once."""
    catalog: VoiceCatalog
    """The voices offered and how request names resolve to them."""

    def param_specs(self) -> list[ParamSpec]:
        """The parameters :meth:`synthesize` accepts."""
        ...

    async def start(self) -> None:
        """Load models. Called once before the first request."""
        ...

    async def close(self) -> None:
        """Release models and threads."""
        ...

    def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        """Yield int16 little-endian PCM at 24 kHz mono, piece by piece.

        ``voice`` is a resolved voice id; ``params`` passed :func:`validate_params`.
        The generator must stop promptly when closed or cancelled.
        """
        ...


@dataclass(frozen=True)
class WordTiming:
    """When one written word is spoken."""

    word: str
    """The word as written in the text (punctuation attached)."""
    start_s: float
    """Seconds from the stream's first sample to the word's first sample."""
    end_s: float
    """Seconds from the stream's first sample to the sample after the word's last."""

    def to_json(self) -> dict[str, Any]:
        return {"word": self.word, "start_s": self.start_s, "end_s": self.end_s}


@dataclass(frozen=True)
class TimedPiece:
    """A piece of audio and the words spoken in it."""

    pcm: bytes
    """int16 little-endian PCM at 24 kHz mono, as :meth:`Engine.synthesize` yields."""
    words: tuple[WordTiming, ...] = ()
    """Words that start in this piece, with times relative to the stream's first sample."""
    last: bool = False
    """The engine knows that no piece follows: the worker ends the stream without asking for
    another, so the last audio and ``eos`` go out together (``False`` when it cannot tell)."""


@runtime_checkable
class TimedEngine(Engine, Protocol):
    """An engine that also reports word timings."""

    def synthesize_timed(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[TimedPiece]:
        """The audio of :meth:`Engine.synthesize`, with the words each piece says."""
        ...


@runtime_checkable
class PieceEngine(Engine, Protocol):
    """An engine that yields :class:`TimedPiece` objects directly and marks the last one."""

    def synthesize_pieces(
        self, text: str, voice: str, params: dict[str, Any], *, timed: bool = False
    ) -> AsyncIterator[TimedPiece]:
        """The audio of :meth:`Engine.synthesize`, its last piece marked ``last``; words only if ``timed``."""
        ...


def pieces_of(
    engine: Engine, base: type, text: str, voice: str, params: dict[str, Any], marked: AsyncIterator[TimedPiece]
) -> AsyncIterator[TimedPiece]:
    """``marked`` (an engine's own pieces, the last one marked), unless ``engine``'s class overrides
    ``base``'s :meth:`~Engine.synthesize`: then that method's audio, its pieces unmarked."""
    if type(engine).synthesize is getattr(base, "synthesize", None):
        return marked
    return _unmarked(engine.synthesize(text, voice, params))


async def _unmarked(audio: AsyncIterator[bytes]) -> AsyncIterator[TimedPiece]:
    try:
        async for pcm in audio:
            yield TimedPiece(pcm)
    finally:
        await close_iterator(audio)


async def close_iterator(iterator: object) -> None:
    """Close ``iterator`` now if it can be closed (an async generator can).

    An async generator whose consumer stops early (a worker stops at the piece
    marked ``last``), or whose consumer is itself closed at a ``yield``, is
    otherwise left suspended and closed later by the event loop's finalizer
    hook: in a task of its own, with a wake-up of the loop from its "other
    thread" channel, per generator, its ``finally`` blocks deferred until then.
    So each generator that relays another's items closes it in a ``finally``.
    """
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def supports_timestamps(engine: object) -> bool:
    """Whether ``engine`` reports word timings.

    It does when it has a callable ``synthesize_timed`` and does not turn it
    off with a false ``word_timings`` attribute (the test engine's switch).
    """
    return callable(getattr(engine, "synthesize_timed", None)) and bool(getattr(engine, "word_timings", True))
