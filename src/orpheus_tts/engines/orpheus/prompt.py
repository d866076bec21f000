"""What the Orpheus model is asked: prompt token ids, voices, emotive tags, sampling.

The model reads ``[START_OF_HUMAN] + tokenize("{voice}: {text}") (with BOS) +
[END_OF_TEXT, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH]`` and answers with
audio tokens until :data:`END_OF_SPEECH`. Everything here works on token ids,
never on detokenized strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orpheus_tts.engines.base import DEFAULT_VOICE_ALIASES, InvalidParameterError, ParamSpec, Voice

__all__ = [
    "AUDIO_TOKEN_BASE",
    "AUDIO_TOKEN_END",
    "BOS",
    "CODES_PER_SLOT",
    "CUSTOM_TOKEN_BASE",
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_REPETITION_PENALTY",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "EMOTIVE_TAGS",
    "END_OF_HUMAN",
    "END_OF_SPEECH",
    "END_OF_TEXT",
    "LANGUAGES",
    "MAX_SEED",
    "ORPHEUS_VOCAB_SIZE",
    "PROMPT_SUFFIX",
    "SLOTS_PER_FRAME",
    "START_OF_AI",
    "START_OF_HUMAN",
    "START_OF_SPEECH",
    "TOKENS_PER_AUDIO_S",
    "Prompt",
    "SamplingParams",
    "UnknownTagError",
    "build_prompt",
    "check_tags",
    "language_of_model",
    "max_tokens_for",
    "param_specs",
    "render_prompt_text",
    "sampling_from_params",
    "voices_for",
]

# --- token ids -------------------------------------------------------------------------------
CUSTOM_TOKEN_BASE = 128_256
"""Id of ``<custom_token_0>``: id ``CUSTOM_TOKEN_BASE + N`` renders as ``<custom_token_N>``."""
BOS = 128_000
END_OF_TEXT = 128_009
START_OF_SPEECH = 128_257
END_OF_SPEECH = 128_258
"""The stop token."""
START_OF_HUMAN = 128_259
END_OF_HUMAN = 128_260
START_OF_AI = 128_261
END_OF_AI = 128_262
PAD = 128_263
AUDIO_TOKEN_BASE = 128_266
"""Id of slot 0, code 0."""
SLOTS_PER_FRAME = 7
CODES_PER_SLOT = 4096
AUDIO_TOKEN_END = AUDIO_TOKEN_BASE + SLOTS_PER_FRAME * CODES_PER_SLOT
"""One past the last audio token id (156 938)."""
ORPHEUS_VOCAB_SIZE = 156_940
PROMPT_PREFIX = (START_OF_HUMAN,)
PROMPT_SUFFIX = (END_OF_TEXT, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH)

# --- sampling --------------------------------------------------------------------------------
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.9
DEFAULT_REPETITION_PENALTY = 1.1
"""At least 1.1 keeps the model stable; higher speeds speech up."""
DEFAULT_MAX_MODEL_LEN = 8192
"""Context length (prompt + audio tokens) the backends reserve per request."""
MAX_SEED = 2**32 - 2
"""Largest seed every backend accepts: llama.cpp seeds are 32-bit and 2**32 - 1 means "random" there."""
TOKENS_PER_AUDIO_S = 24_000 / 2048 * SLOTS_PER_FRAME
"""Audio tokens per second of speech: 82.03."""
MIN_SPEECH_CHARS_PER_S = 6.0
"""Slowest speech the automatic ``max_tokens`` allows for (ordinary speech is ~14 chars/s)."""
EMOTIVE_TAG_AUDIO_S = 1.5
"""Audio budget added per emotive tag (a laugh or a sigh takes time but has few characters)."""
MAX_TOKENS_MARGIN_S = 3.0
"""Audio budget added to every segment for lead-in, trailing silence and pauses."""

# --- voices and tags -------------------------------------------------------------------------
EMOTIVE_TAGS = ("laugh", "chuckle", "sigh", "cough", "sniffle", "groan", "yawn", "gasp")
"""Tags the finetuned models perform; any other ``<word>`` would be read aloud."""

_ENGLISH = (
    ("tara", "female, conversational; the most natural voice"),
    ("leah", "female, warm"),
    ("jess", "female, lively"),
    ("leo", "male, calm"),
    ("dan", "male, casual"),
    ("mia", "female, soft"),
    ("zac", "male, energetic"),
    ("zoe", "female, bright"),
)
# (voice id, BCP-47 language, romanized alias or "")
_MULTILINGUAL: dict[str, tuple[tuple[str, str, str], ...]] = {
    "fr": (("pierre", "fr-FR", ""), ("amelie", "fr-FR", ""), ("marie", "fr-FR", "")),
    "de": (("jana", "de-DE", ""), ("thomas", "de-DE", ""), ("max", "de-DE", "")),
    "ko": (("유나", "ko-KR", "yuna"), ("준서", "ko-KR", "junseo")),
    "hi": (("ऋतिका", "hi-IN", "ritika"),),
    "zh": (("长乐", "zh-CN", "changle"), ("白芷", "zh-CN", "baizhi")),
    "es_it": (
        ("javi", "es-ES", ""),
        ("sergio", "es-ES", ""),
        ("maria", "es-ES", ""),
        ("pietro", "it-IT", ""),
        ("giulia", "it-IT", ""),
        ("carlo", "it-IT", ""),
    ),
}
LANGUAGES = ("en", *_MULTILINGUAL)
"""Voice sets: ``en`` for the English finetune, the rest for the multilingual research releases."""

_SPECIAL_TEXT = re.compile(r"<\|[^<>|]{0,64}\|>")
"""Llama 3's special-token spelling, ``<|eot_id|>``."""
_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][\w-]*)\s*(/?)\s*>")
_MODEL_LANGUAGE = re.compile(r"3b-(fr|de|ko|hi|zh|es_it)-", re.IGNORECASE)


class UnknownTagError(InvalidParameterError):
    """The text holds an angle-bracket tag the model would read aloud."""

    def __init__(self, tags: Sequence[str]) -> None:
        self.key = "text"
        self.tags = list(tags)
        self.accepted = [f"<{t}>" for t in EMOTIVE_TAGS]
        Exception.__init__(
            self,
            f"text contains unknown tag(s) {', '.join(self.tags)}: the model would read them aloud; "
            f"supported emotive tags: {' '.join(self.accepted)}",
        )


def check_tags(text: str) -> None:
    """Raise :class:`UnknownTagError` if ``text`` has a ``<tag>`` other than the emotive ones."""
    unknown = [
        m.group(0) for m in _TAG.finditer(text) if m.group(1) or m.group(3) or m.group(2).lower() not in EMOTIVE_TAGS
    ]
    if unknown:
        raise UnknownTagError(list(dict.fromkeys(unknown)))


def count_tags(text: str) -> int:
    return sum(1 for m in _TAG.finditer(text) if m.group(2).lower() in EMOTIVE_TAGS)


def language_of_model(model: str | None) -> str:
    """The voice set a model id implies: ``fr`` for ``canopylabs/3b-fr-ft-research_release``, else ``en``."""
    match = _MODEL_LANGUAGE.search(model or "")
    return match.group(1).lower() if match else "en"


def voices_for(language: str) -> tuple[list[Voice], str, dict[str, str]]:
    """(voices, default voice id, aliases) for a voice set in :data:`LANGUAGES`."""
    if language == "en":
        voices = [Voice(name, "en-US", desc) for name, desc in _ENGLISH]
    elif language in _MULTILINGUAL:
        voices = [
            Voice(name, lang, f"{lang} voice", (alias,) if alias else ())
            for name, lang, alias in _MULTILINGUAL[language]
        ]
    else:
        raise ValueError(f"unknown language {language!r}; choose one of: {', '.join(LANGUAGES)}")
    default = voices[0].id
    ids = {v.id for v in voices}
    aliases = {name: default for name in DEFAULT_VOICE_ALIASES if name not in ids}
    return voices, default, aliases


@dataclass(frozen=True)
class Prompt:
    """One segment's prompt, as token ids and as the equivalent text."""

    text: str
    """``"{voice}: {text}"``, the part the tokenizer encodes."""
    ids: tuple[int, ...] | None
    """The full prompt as token ids; ``None`` when no local tokenizer is available."""

    def rendered(self) -> str:
        return render_prompt_text(self.text)


def build_prompt(voice: str | None, text: str, encode: Callable[[str], list[int]] | None) -> Prompt:
    """The prompt for ``text`` in ``voice`` (``None``: no voice prefix, for the base model).

    ``encode`` turns text into token ids *with* BOS (special-token strings in the
    text encoded as plain text); without it only the text form exists, and
    text that spells a special token is an :class:`InvalidParameterError`.
    """
    body = f"{voice}: {text}" if voice else text
    if encode is None:
        # A text prompt reaches a server that reads special tokens in it, so the text must hold none.
        marker = _SPECIAL_TEXT.search(text)
        if marker:
            raise InvalidParameterError(
                "text", f"contains {marker.group(0)!r}, which the model server would read as a control token", []
            )
        return Prompt(body, None)
    ids = list(encode(body))
    if not ids or ids[0] != BOS:
        ids.insert(0, BOS)
    return Prompt(body, (*PROMPT_PREFIX, *ids, *PROMPT_SUFFIX))


def render_prompt_text(body: str) -> str:
    """The prompt as text with special tokens spelled out, for servers that take no token ids."""
    custom = {tid: f"<custom_token_{tid - CUSTOM_TOKEN_BASE}>" for tid in (*PROMPT_PREFIX, *PROMPT_SUFFIX)}
    custom[END_OF_TEXT] = "<|eot_id|>"
    prefix = "".join(custom[t] for t in PROMPT_PREFIX)
    suffix = "".join(custom[t] for t in PROMPT_SUFFIX)
    return f"{prefix}<|begin_of_text|>{body}{suffix}"


def max_tokens_for(text: str) -> int:
    """A generous token budget for speaking ``text``: never a fixed cut-off, never unbounded.

    Sized for slow speech (:data:`MIN_SPEECH_CHARS_PER_S`) plus time for each
    emotive tag and a margin, rounded up to whole frames.
    """
    spoken = _TAG.sub("", text)
    seconds = len(spoken) / MIN_SPEECH_CHARS_PER_S + count_tags(text) * EMOTIVE_TAG_AUDIO_S
    tokens = math.ceil((seconds + MAX_TOKENS_MARGIN_S) * TOKENS_PER_AUDIO_S)
    return -(-tokens // SLOTS_PER_FRAME) * SLOTS_PER_FRAME


@dataclass(frozen=True)
class SamplingParams:
    """How a backend samples one segment."""

    max_tokens: int
    """Most tokens to generate for the segment."""
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0
    """0 disables top-k."""
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = (END_OF_SPEECH,)


def param_specs(max_model_len: int = DEFAULT_MAX_MODEL_LEN) -> list[ParamSpec]:
    """The request parameters the Orpheus engine accepts."""
    return [
        ParamSpec("temperature", "float", DEFAULT_TEMPERATURE, 0.0, 2.0, "Sampling temperature; 0 is greedy"),
        ParamSpec("top_p", "float", DEFAULT_TOP_P, 0.01, 1.0, "Nucleus sampling mass"),
        ParamSpec("top_k", "int", 0, 0, ORPHEUS_VOCAB_SIZE, "Sample among the k likeliest tokens; 0 disables"),
        ParamSpec(
            "max_tokens",
            "int",
            None,
            SLOTS_PER_FRAME,
            max_model_len,
            "Most audio tokens per text segment (82 per second of audio); default: sized from the text",
        ),
        ParamSpec(
            "repetition_penalty",
            "float",
            DEFAULT_REPETITION_PENALTY,
            1.0,
            2.0,
            "Penalty on repeated tokens; >= 1.1 keeps the model stable, higher speaks faster",
        ),
        ParamSpec("seed", "int", None, 0, MAX_SEED, "Seed for reproducible sampling"),
    ]


def sampling_from_params(
    params: Mapping[str, Any], segment: str, prompt_len: int, max_model_len: int, seed_offset: int = 0
) -> SamplingParams:
    """Sampling for one segment from validated request ``params``.

    ``max_tokens`` (requested or sized from the segment) is capped so that the
    prompt plus the answer fit in ``max_model_len``. ``seed_offset`` (the
    segment's index) is added to a requested seed.
    """
    requested = params.get("max_tokens")
    budget = int(requested) if isinstance(requested, int) else max_tokens_for(segment)
    room = max_model_len - prompt_len
    if room < SLOTS_PER_FRAME:
        raise InvalidParameterError(
            "text", f"segment prompt of {prompt_len} tokens leaves no room in max_model_len={max_model_len}", []
        )
    seed = params.get("seed")
    return SamplingParams(
        max_tokens=min(budget, room),
        temperature=float(params.get("temperature", DEFAULT_TEMPERATURE)),
        top_p=float(params.get("top_p", DEFAULT_TOP_P)),
        top_k=int(params.get("top_k") or 0),
        repetition_penalty=float(params.get("repetition_penalty", DEFAULT_REPETITION_PENALTY)),
        # Each segment of a seeded request gets its own, still reproducible, seed.
        seed=(int(seed) + seed_offset) % (MAX_SEED + 1) if isinstance(seed, int) else None,
    )
