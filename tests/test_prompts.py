"""Chat-layout prompts: parity with the official new (chat-template) path, plus what it does not cover."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx import prompts as P
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.codes import interleave
from comfyui_step_audio_editx.engines.step_audio_editx.text_tokenizer import TextTokenizer
from comfyui_step_audio_editx.engines.step_audio_editx import vocabulary as V
from comfyui_step_audio_editx.engines.step_audio_editx.vocabulary import VocabularyError

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def tok(parity) -> TextTokenizer:
    return TextTokenizer.from_folder(parity.editx_dir)


@pytest.fixture(scope="module")
def ref(parity) -> dict:
    return parity.json("prompts_new")


@pytest.fixture(scope="module")
def audio(ref, tok) -> list[int]:
    ids = interleave(ref["vq02_codes"], ref["vq06_codes"])
    assert tok.encode(ref["audio_token_str"]) == ids
    return ids


# The reference prompts were made by the official code with the original tag spelling ([Laughter]); the
# official code writes tags verbatim, so our prompts equal them when told the weights are that release.
ORIGINAL = V.WEIGHTS_RELEASE_ORIGINAL


def _build(tok, case, audio, release=ORIGINAL):
    if "edit_type" in case:
        args = (case["edit_type"], case["edit_info"], case["audio_text"], audio, case["text"], release)
        return P.build_edit_prompt(tok, *args), P.render_edit_prompt(*args)
    args = (case["prompt_text"], audio, case["target_text"], case["speaker"], release)
    return P.build_clone_prompt(tok, *args), P.render_clone_prompt(*args)


def test_current_weights_get_the_current_tag_spelling(ref, tok, audio):
    """Same reference cases for the 2026-01 weights: only the tag marks change, to the spelling they learnt."""
    case = next(c for c in ref["cases"].values() if c.get("edit_type") == "paralinguistic")
    assert "[Laughter]" in case["rendered"]
    ids, rendered = _build(tok, case, audio, V.WEIGHTS_RELEASE_CURRENT)
    assert rendered == case["rendered"].replace("[Laughter]", "[laugh]")
    assert ids == tok.encode(rendered) and ids != case["ids"]


def test_prompt_strings_equal_official(ref):
    assert P.SYSTEM_PROMPT_EDIT == ref["system_prompt_edit"]
    assert P.CLONE_SYSTEM_PROMPT_TEMPLATE == ref["clone_system_prompt_template"]


def test_every_reference_case_ids_and_rendering(ref, tok, audio):
    kinds = set()
    for name, case in ref["cases"].items():
        ids, rendered = _build(tok, case, audio)
        assert rendered == case["rendered"], name
        assert ids == case["ids"], name
        kinds.add(case.get("edit_type", "clone"))
    assert kinds >= {"clone", "emotion", "style", "speed", "denoise", "vad", "paralinguistic"}


def test_instructions_equal_official(ref):
    for name, case in ref["cases"].items():
        if "edit_type" in case:
            got = P.build_edit_instruction(case["edit_type"], case["edit_info"], case["audio_text"], case["text"],
                                           ORIGINAL)
            assert got == case["instruction"], name


def test_layout_frame(tok, audio):
    ids = P.build_edit_prompt(tok, "emotion", "sad", "Hello there.", audio)
    assert ids[:2] == [C.BOS_ID, C.BOT_ID]
    assert ids[-3:] == [C.BOT_ID, tok.piece_to_id("\u2581assistant"), C.NEWLINE_ID]
    assert ids.count(C.EOT_ID) == 2 and ids.count(C.BOS_ID) == 1
    start = ids.index(audio[0])
    assert ids[start:start + len(audio)] == audio
    assert ids[start - 2:start] == [C.NEWLINE_ID, C.NEWLINE_ID]  # instruction "\n" + separator "\n"


@pytest.mark.parametrize(
    "edit_type, value, expected",
    [
        ("speed", "slower", "Make the following audio more slower. The text corresponding to the audio is: Hi.\n"),
        ("style", "act coy", "Make the following audio more act_coy style. The text corresponding to the audio is: Hi.\n"),
        ("emotion", "Remove", "Remove any emotion in the following audio and the reference text is: Hi.\n"),
        ("denoise", None, P.INSTRUCTION_DENOISE),
        ("vad", "ignored", P.INSTRUCTION_VAD),
    ],
)
def test_instructions_beyond_the_reference(edit_type, value, expected):
    assert P.build_edit_instruction(edit_type, value, "  Hi. \n") == expected


def test_speed_spellings_follow_the_official_more_faster_instruction(ref):
    """The official rule ("more" + value, so "more more faster") carried to every spelling of "more slower"."""
    official = ref["cases"]["speed_more_faster"]
    expected = official["instruction"].replace("faster", "slower")
    for spelling in ("more slower", "more_slower", "More-Slower"):
        assert P.build_edit_instruction("speed", spelling, official["audio_text"]) == expected


def _official_chat(ref, system: str, user: str) -> str:
    """The official chat template (tokenizer_config.json) rendered as apply_chat_template does."""
    import jinja2

    template = jinja2.Environment().from_string(ref["chat_template"])
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return template.render(messages=messages, add_generation_prompt=True)


def test_prompts_for_other_inputs_equal_the_official_chat_template(tok, ref, audio):
    """Inputs the reference set does not hold: rendered with the official template, tokenised by the
    (parity-tested) tokenizer, they must give our ids."""
    audio_str = ref["audio_token_str"]
    cases = [
        ("speed", "more slower", "It's 3.14 — okay?  Yes.", None),
        ("style", "whisper", "今日はいい天気ですね。", None),
        ("paralinguistic", None, "I can't believe it we won!", "I can't believe it [laugh] we won!"),
    ]
    for edit_type, value, text, new_text in cases:
        instruction = P.build_edit_instruction(edit_type, value, text, new_text)
        official = _official_chat(ref, P.SYSTEM_PROMPT_EDIT, instruction + "\n" + audio_str + "\n")
        assert P.render_edit_prompt(edit_type, value, text, audio, new_text) == official
        assert P.build_edit_prompt(tok, edit_type, value, text, audio, new_text) == tok.encode(official)
    system = P.CLONE_SYSTEM_PROMPT_TEMPLATE.format(speaker="clone_0123456789abcdef", prompt_text="Reference words.",
                                                   prompt_wav_tokens=audio_str)
    official = _official_chat(ref, system, "  Target, with spaces  ")
    args = ("Reference words.", audio, "  Target, with spaces  ", "clone_0123456789abcdef")
    assert P.render_clone_prompt(*args) == official
    assert P.build_clone_prompt(tok, args[0], np.array(audio), *args[2:]) == tok.encode(official)
    assert f"speaker name: {P.clone_speaker_name('a')}\n" in P.render_clone_prompt("a", audio, "b")


def _official_voice_id(text: str, wav: np.ndarray) -> str:
    """The original tts.py generate_clone_voice_id, restated: text bytes, then 1000 + 1000 edge samples."""
    flat = wav.astype(np.float32).flatten()
    sample = np.concatenate([flat[:1000], flat[-1000:]]) if flat.size > 2000 else flat
    return "clone_" + hashlib.sha256(text.encode("utf-8") + sample.tobytes()).hexdigest()[:16]


def test_clone_speaker_name_is_the_official_hash_of_transcript_and_samples():
    rng = np.random.default_rng(3)
    stereo = rng.uniform(-0.5, 0.5, size=(2, 4410)).astype(np.float32)  # [C, T] as torchaudio.load gives
    short = rng.uniform(-0.5, 0.5, size=(1, 1500)).astype(np.float32)
    import torch

    for text, wav in (("Reference words, 你好.", stereo), ("short", short)):
        name = P.clone_speaker_name(text, torch.from_numpy(wav))
        assert name == _official_voice_id(text, wav)
        assert re.fullmatch(r"clone_[0-9a-f]{16}", name)
    # Different prompts are different speakers; the middle of a long clip is not hashed (as official).
    assert P.clone_speaker_name("a", stereo) != P.clone_speaker_name("b", stereo)
    middle_changed = stereo.copy()
    middle_changed[0, 2000] += 0.1
    assert P.clone_speaker_name("a", middle_changed) == P.clone_speaker_name("a", stereo)
    name = P.clone_speaker_name("a", stereo)
    assert f"speaker name: {name}\n" in P.render_clone_prompt("a", [65536 + 1] * 5, "b", speaker=name)


def test_speed_remove_is_rejected_with_the_reason(tok, audio):
    with pytest.raises(VocabularyError, match="emotion 'remove'"):
        P.build_edit_prompt(tok, "speed", "remove", "Hi.", audio)


@pytest.mark.parametrize(
    "edit_type, value, closest",
    [("emotion", "fearful", "fear"), ("style", "whispr", "whisper"), ("speed", "fastr", "faster"), ("emotoin", "happy", "emotion")],
)
def test_unknown_values_name_the_closest(edit_type, value, closest, tok, audio):
    with pytest.raises(ValueError, match=f"'{closest}'"):
        P.build_edit_prompt(tok, edit_type, value, "Hi.", audio)


def test_value_required(tok, audio):
    with pytest.raises(VocabularyError, match="needs a value"):
        P.build_edit_prompt(tok, "style", None, "Hi.", audio)


def test_paralinguistic_new_text_checks(tok, audio):
    fixed = P.build_edit_instruction("paralinguistic", None, "Hello world", "Hello [laughter] world")
    assert "[laugh]" in fixed and "[laughter]" not in fixed
    assert P.build_edit_instruction("paralinguistic", None, "Hello", "Hello [laugh] [breath]", ORIGINAL).count(
        "[Laughter] [Breathing]") == 1
    assert "[sic]" in P.check_paralinguistic_text("He said [sic] [Sigh] so.")
    assert P.check_paralinguistic_text("So [CHUCKLE] [clears_throat] [Question-yi] ok") == \
        "So [chuckle] [clears throat] [Question-yi] ok"
    with pytest.raises(P.PromptError, match=r"not trained on \[chuckle\]"):
        P.check_paralinguistic_text("So [chuckle] ok", ORIGINAL)
    with pytest.raises(P.PromptError, match="needs new_text"):
        P.build_edit_prompt(tok, "paralinguistic", None, "Hello world", audio)
    with pytest.raises(P.PromptError, match="no paralinguistic"):
        P.build_edit_prompt(tok, "paralinguistic", None, "Hello world", audio, "Hello world")
    with pytest.raises(P.PromptError, match=r"Did you mean \[laugh\]"):
        P.check_paralinguistic_text("Hello [Laughtr] world")
    with pytest.raises(P.PromptError, match=r"Did you mean \[Laughter\]"):
        P.check_paralinguistic_text("Hello [Laughtr] world", ORIGINAL)
    with pytest.raises(P.PromptError, match=r"Did you mean \[giggle\]"):
        P.check_paralinguistic_text("Hello [gigle] world")
    with pytest.raises(P.PromptError, match=r"\[laugh\]"):
        P.check_paralinguistic_text("Hello <Laughter:2> world")


def test_bad_audio_and_texts_are_rejected(tok, audio):
    with pytest.raises(P.PromptError, match="empty"):
        P.build_edit_prompt(tok, "emotion", "happy", "Hi.", [])
    with pytest.raises(P.PromptError, match="65536"):
        P.build_edit_prompt(tok, "emotion", "happy", "Hi.", [5, 6, 7])  # raw codes, not LM ids
    with pytest.raises(P.PromptError, match="control piece"):
        P.build_edit_prompt(tok, "emotion", "happy", "Hi <|EOT|> there", audio)
    with pytest.raises(P.PromptError, match="control piece"):
        P.build_clone_prompt(tok, "ref", audio, "say <audio_12> this")
    with pytest.raises(P.PromptError, match="target_text"):
        P.build_clone_prompt(tok, "ref", audio, "   ")
    with pytest.raises(P.PromptError, match="speaker"):
        P.build_clone_prompt(tok, "ref", audio, "text", speaker="a\nb")
