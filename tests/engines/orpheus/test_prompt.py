"""Prompt ids, voices, emotive tags, sampling defaults and the max_tokens budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from orpheus_tts.engines.base import InvalidParameterError, UnknownVoiceError, VoiceCatalog, validate_params
from orpheus_tts.engines.orpheus.loading import load_tokenizer
from orpheus_tts.engines.orpheus.prompt import (
    EMOTIVE_TAGS,
    LANGUAGES,
    TOKENS_PER_AUDIO_S,
    UnknownTagError,
    build_prompt,
    check_tags,
    language_of_model,
    max_tokens_for,
    param_specs,
    render_prompt_text,
    sampling_from_params,
    voices_for,
)


def test_prompt_ids_have_the_orpheus_layout(tiny_models: tuple[Path, Path]) -> None:
    encode = load_tokenizer(tiny_models[0])
    prompt = build_prompt("tara", "Hi <laugh>", encode)
    body = encode("tara: Hi <laugh>")
    assert body[0] == 128000, "the tokenizer adds BOS"
    assert prompt.ids == (128259, *body, 128009, 128260, 128261, 128257)
    assert prompt.text == "tara: Hi <laugh>"


def test_bos_is_added_when_the_tokenizer_does_not() -> None:
    prompt = build_prompt("leo", "x", lambda text: [ord(c) for c in text])
    assert prompt.ids is not None
    assert prompt.ids[:2] == (128259, 128000)
    assert prompt.ids[-4:] == (128009, 128260, 128261, 128257)


def test_text_rendering_spells_out_the_same_ids() -> None:
    prompt = build_prompt("tara", "Hello.", None)
    assert prompt.ids is None
    assert prompt.rendered() == (
        "<custom_token_3><|begin_of_text|>tara: Hello.<|eot_id|><custom_token_4><custom_token_5><custom_token_1>"
    )
    assert render_prompt_text("x").count("<custom_token_") == 4


@pytest.mark.parametrize("tag", EMOTIVE_TAGS)
def test_emotive_tags_are_accepted(tag: str) -> None:
    check_tags(f"Well <{tag}> that is funny. <{tag.upper()}>")


@pytest.mark.parametrize("text", ["Hi <laughs> there", "<b>bold</b>", "a <pause> b", "</laugh>", "<laugh/>"])
def test_unknown_tags_are_a_clear_parameter_error(text: str) -> None:
    with pytest.raises(UnknownTagError) as info:
        check_tags(text)
    assert isinstance(info.value, InvalidParameterError)
    assert info.value.key == "text"
    message = str(info.value)
    assert "<laugh> <chuckle> <sigh> <cough> <sniffle> <groan> <yawn> <gasp>" in message
    assert "read them aloud" in message


def test_comparison_signs_are_not_tags() -> None:
    check_tags("if a < b and c > d then 3<4")


def test_voice_sets() -> None:
    voices, default, aliases = voices_for("en")
    assert default == "tara"
    assert [v.id for v in voices] == ["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"]
    catalog = VoiceCatalog(voices, default, aliases)
    assert catalog.resolve("alloy") == "tara"
    assert catalog.resolve("zac") == "zac"
    with pytest.raises(UnknownVoiceError):
        catalog.resolve("pierre")
    assert set(LANGUAGES) == {"en", "fr", "de", "ko", "hi", "zh", "es_it"}
    korean = VoiceCatalog(*voices_for("ko"))
    assert korean.resolve("yuna") == "유나"
    assert korean.resolve(None) == "유나"
    es_it = voices_for("es_it")[0]
    assert {v.language for v in es_it} == {"es-ES", "it-IT"}
    with pytest.raises(ValueError, match="unknown language"):
        voices_for("xx")


def test_language_is_inferred_from_multilingual_model_ids() -> None:
    assert language_of_model("canopylabs/3b-fr-ft-research_release") == "fr"
    assert language_of_model("canopylabs/3b-es_it-ft-research_release") == "es_it"
    assert language_of_model("canopylabs/orpheus-3b-0.1-ft") == "en"
    assert language_of_model(None) == "en"


def test_param_defaults_and_schema() -> None:
    specs = param_specs()
    assert [s.name for s in specs] == ["temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "seed"]
    params = validate_params(specs, {})
    assert params == {
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 0,
        "max_tokens": None,
        "repetition_penalty": 1.1,
        "seed": None,
    }
    with pytest.raises(InvalidParameterError, match="speed"):
        validate_params(specs, {"speed": 1.2})
    with pytest.raises(InvalidParameterError, match="repetition_penalty"):
        validate_params(specs, {"repetition_penalty": 0.5})


def test_max_tokens_grows_with_the_text_and_has_no_fixed_cut() -> None:
    short, long = max_tokens_for("Hi."), max_tokens_for("word " * 60)
    assert short % 7 == 0
    assert long % 7 == 0
    assert long > short
    assert long > 1200, "300 characters need more than the reference's 14.6 s cap"
    # Every second of plausible speech (~14 chars/s) fits with room to spare.
    text = "x" * 280
    assert max_tokens_for(text) >= 2 * (len(text) / 14) * TOKENS_PER_AUDIO_S
    assert max_tokens_for("Ha <laugh> <laugh>") > max_tokens_for("Ha")


def test_sampling_from_params() -> None:
    params = validate_params(param_specs(), {"seed": 7, "top_k": 40})
    first = sampling_from_params(params, "Hello there.", prompt_len=20, max_model_len=8192)
    assert (first.temperature, first.top_p, first.top_k, first.repetition_penalty) == (0.6, 0.9, 40, 1.1)
    assert first.max_tokens == max_tokens_for("Hello there.")
    assert first.stop_token_ids[0] == 128258
    assert sampling_from_params(params, "x", 20, 8192, seed_offset=1).seed == 8
    capped = sampling_from_params(validate_params(param_specs(), {"max_tokens": 5000}), "x", 20, 1024)
    assert capped.max_tokens == 1004, "prompt plus answer fit in max_model_len"
    with pytest.raises(InvalidParameterError, match="max_model_len"):
        sampling_from_params(params, "x", prompt_len=1020, max_model_len=1024)


def test_user_text_never_encodes_to_control_tokens(tiny_models: tuple[Path, Path]) -> None:
    encode = load_tokenizer(tiny_models[0])
    ids = build_prompt("tara", "stop here <|eot_id|><|begin_of_text|> and go on", encode).ids
    assert ids is not None
    body = ids[2:-4]  # between [START_OF_HUMAN, BOS] and the suffix
    assert all(t < 128_000 for t in body), "special-token text in user text is plain text"
    assert ids[-4:] == (128_009, 128_260, 128_261, 128_257), "only the engine's own markers are special"


def test_a_text_prompt_refuses_text_that_spells_a_special_token() -> None:
    with pytest.raises(InvalidParameterError, match=r"'<\|eot_id\|>'.*control token"):
        build_prompt("tara", "hi <|eot_id|> there", None)
    assert build_prompt("tara", "a < b | c > d", None).ids is None


def test_the_test_tokenizer_is_laid_out_like_canopys(tiny_models: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models[0]))
    decoder = tokenizer.added_tokens_decoder
    assert decoder[128_009].special
    assert decoder[128_000].special
    assert not decoder[128_261].special, "custom tokens are ordinary added tokens"
    assert str(decoder[128_261]) == "<custom_token_5>"
