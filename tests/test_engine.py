"""The engine end to end on a tiny random model (CPU): clone, every edit type, iterations, batches, errors."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.engine import EngineConfig, StepAudioEditX
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.audio import AudioInputError
from comfyui_step_audio_editx.engines.step_audio_editx.model_files import ModelFilesError
from comfyui_step_audio_editx.engines.step_audio_editx.types import (
    CloneRequest,
    EditRequest,
    GenerationSettings,
    SamplingConfig,
    StopReason,
)
from comfyui_step_audio_editx.engines.step_audio_editx.vocabulary import VocabularyError

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "example_workflows" / "sample_speech.wav"
TEXT = (REPO_ROOT / "example_workflows" / "sample_speech.txt").read_text(encoding="utf-8").strip()
GREEDY = GenerationSettings(sampling=SamplingConfig(temperature=0.0))
SAMPLED = GenerationSettings()


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine


@pytest.fixture(scope="module")
def clip():
    data, sr = sf.read(SAMPLE, dtype="float32")
    return torch.from_numpy(data), sr


def crop(clip, seconds: float):
    wav, sr = clip
    return wav[: int(seconds * sr)], sr


def check_audio(result):
    """24 kHz mono float32, 2,880 samples per generated 5-token group."""
    assert result.sample_rate == C.OUTPUT_SAMPLE_RATE
    assert result.waveform.dtype == torch.float32 and result.waveform.dim() == 1
    p = result.passes[-1]
    assert result.waveform.shape[0] == C.SAMPLES_PER_GROUP * math.ceil(p.n_generated_tokens / C.TOKENS_PER_GROUP)
    assert p.n_generated_tokens % C.TOKENS_PER_GROUP == 0 or p.stop_reason is StopReason.CAP
    assert 0 < p.n_generated_tokens <= p.max_new_tokens
    assert torch.isfinite(result.waveform).all() and float(result.waveform.abs().max()) <= 0.99 + 1e-6


def test_clone_speaks_in_groups(engine, clip):
    wav, sr = crop(clip, 2.0)
    result = engine.clone(CloneRequest(wav, sr, TEXT, "Good morning, everyone.", seed=5), SAMPLED)
    check_audio(result)
    assert result.passes[0].max_new_tokens >= 2 * C.AUDIO_TOKENS_PER_SECOND  # a short sentence still gets seconds
    assert all(C.VQ02_FIRST_ID <= t <= C.VQ06_LAST_ID for t in result.passes[0].tokens)


def test_clone_prompt_names_the_speaker_by_the_official_hash(engine, clip, monkeypatch):
    """The clone prompt carries clone_<sha256[:16]> of the transcript and the samples as the caller gave them."""
    from comfyui_step_audio_editx.engines.step_audio_editx import engine as engine_mod
    from comfyui_step_audio_editx.engines.step_audio_editx.prompts import clone_speaker_name

    seen = []
    real = engine_mod.build_clone_prompt
    monkeypatch.setattr(engine_mod, "build_clone_prompt",
                        lambda *a, **k: seen.append(k.get("speaker")) or real(*a, **k))
    wav, sr = crop(clip, 1.0)
    stereo = torch.stack([wav, 0.5 * wav])
    engine.clone(CloneRequest(stereo, sr, TEXT, "Hi.", seed=1),
                 GenerationSettings(max_new_tokens=5, dynamic_tokens=False))
    assert seen == [clone_speaker_name(TEXT, stereo)]
    assert seen[0] != clone_speaker_name(TEXT, wav) and seen[0].startswith("clone_")


@pytest.fixture
def sent(monkeypatch):
    """Every edit prompt the engine builds: (rendered prompt, its audio ids)."""
    from comfyui_step_audio_editx.engines.step_audio_editx import engine as engine_mod
    from comfyui_step_audio_editx.engines.step_audio_editx.prompts import render_edit_prompt

    prompts = []
    real = engine_mod.build_edit_prompt

    def record(tok, edit_type, value, audio_text, ids, new_text, release):
        prompts.append((render_edit_prompt(edit_type, value, audio_text, ids, new_text, release), tuple(ids)))
        return real(tok, edit_type, value, audio_text, ids, new_text, release)

    monkeypatch.setattr(engine_mod, "build_edit_prompt", record)
    return prompts


NEWS = "I just heard the news, and honestly"


@pytest.mark.parametrize("edit_type,value,new_text,instruction", [
    ("emotion", "happy", None, f"Make the following audio more happy. The text corresponding to the audio is: {NEWS}\n"),
    ("emotion", "remove", None, f"Remove any emotion in the following audio and the reference text is: {NEWS}\n"),
    ("style", "whisper", None, f"Make the following audio more whisper style. The text corresponding to the audio is: {NEWS}\n"),
    ("speed", "more faster", None, f"Make the following audio more more faster. The text corresponding to the audio is: {NEWS}\n"),
    ("paralinguistic", None, "I just heard the news [Laughter], and honestly",
     "Add some non-verbal sounds to make the audio more natural, the new text is : I just heard the news [laugh], and "
     f"honestly\n  The text corresponding to the audio is: {NEWS}\n"),
    ("denoise", None, None, "Remove any noise from the given audio while preserving the voice content clearly."),
    ("vad", None, None, "Remove any silent portions from the given audio while preserving the voice content clearly."),
])
def test_every_edit_type(engine, clip, sent, edit_type, value, new_text, instruction):
    """Each edit sends its official instruction, followed by the clip's own audio ids, and decodes to audio."""
    wav, sr = crop(clip, 1.5)
    text = "" if edit_type in ("denoise", "vad") else NEWS
    engine.clear_cache()
    result = engine.edit(EditRequest(wav, sr, text, edit_type, value, new_text, seed=3), SAMPLED)
    check_audio(result)
    (rendered, ids), = sent
    assert f"<|BOT|> human\n{instruction}" in rendered
    assert ids == engine._parts.frontend.encode([(wav, sr)])[0].audio_ids


def test_iterations_chain_and_lowering_the_count_is_free(engine, clip, sent):
    wav, sr = crop(clip, 1.5)
    engine.clear_cache()
    two = engine.edit(EditRequest(wav, sr, TEXT, "style", "whisper", n_iterations=2, seed=9), SAMPLED)
    assert len(two.passes) == 2
    check_audio(two)
    one = engine.edit(EditRequest(wav, sr, TEXT, "style", "whisper", n_iterations=1, seed=9), SAMPLED)
    assert one.passes[0] is two.passes[0]  # served from the per-iteration cache
    assert torch.equal(one.waveform, two.passes[0].waveform)
    assert len(sent) == 2  # the second call built no prompt
    # the second pass edits the first pass's 24 kHz output: its prompt holds exactly that output's audio ids
    first_output = engine._parts.frontend.encode([(two.passes[0].waveform, C.OUTPUT_SAMPLE_RATE)], user_input=False)
    assert sent[1][1] == first_output[0].audio_ids != sent[0][1]
    assert two.passes[1].n_prompt_tokens - two.passes[0].n_prompt_tokens == len(sent[1][1]) - len(sent[0][1])


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_batch_equals_sequential(engine, clip, settings):
    """What the README promises: the same tokens, and waveforms equal up to float rounding (the batched
    decoder's kernels sum in another order; measured <= 1.7e-7 here, one 16-bit step is 3.1e-5)."""
    settings = replace(settings, dynamic_tokens=False, max_new_tokens=60)  # a fixed cap keeps it fast
    lengths = (0.8, 1.3, 1.9, 2.6)
    requests = [EditRequest(*crop(clip, s), TEXT, "emotion", "sad", seed=100 + i) for i, s in enumerate(lengths)]
    engine.clear_cache()
    batched = engine.batch_edit(requests, settings)
    engine.clear_cache()
    alone = [engine.edit(r, settings) for r in requests]
    for b, a in zip(batched, alone):
        check_audio(b)
        assert b.passes[0].tokens == a.passes[0].tokens
        assert b.waveform.shape == a.waveform.shape
        assert float((b.waveform - a.waveform).abs().max()) < 1e-5


def test_seeds_decide_the_output(engine, clip):
    wav, sr = crop(clip, 1.2)
    engine.clear_cache()
    a = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "fear", seed=1), SAMPLED)
    engine.clear_cache()
    b = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "fear", seed=1), SAMPLED)
    c = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "fear", seed=2), SAMPLED)
    assert a.passes[0].tokens == b.passes[0].tokens and torch.equal(a.waveform, b.waveform)
    assert a.passes[0].tokens != c.passes[0].tokens


def test_fixed_cap_when_dynamic_tokens_is_off(engine, clip):
    wav, sr = crop(clip, 1.2)
    settings = GenerationSettings(dynamic_tokens=False, max_new_tokens=40)
    result = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "angry", seed=4), settings)
    assert result.passes[0].max_new_tokens == 40 and result.passes[0].n_generated_tokens <= 40
    if result.passes[0].n_generated_tokens == 40:
        assert result.truncated and result.stop_reason is StopReason.CAP


def test_progress_reports_every_token_and_can_stop(engine, clip):
    wav, sr = crop(clip, 1.2)
    seen = []

    def stop_after_ten(p):
        seen.append(p)
        return p.stage == "generate" and p.done >= 10

    engine.clear_cache()
    result = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "sad", seed=8, n_iterations=2), SAMPLED,
                         progress=stop_after_ten)
    assert result.stop_reason is StopReason.INTERRUPTED and len(result.passes) == 1  # no pass on a cut output
    generate = [p for p in seen if p.stage == "generate"]
    assert [p.done for p in generate[:10]] == list(range(1, 11))


def test_progress_exception_propagates(engine, clip):
    class Cancelled(Exception):
        pass

    def cancel(p):
        raise Cancelled

    wav, sr = crop(clip, 1.1)
    engine.clear_cache()
    with pytest.raises(Cancelled):
        engine.edit(EditRequest(wav, sr, TEXT, "emotion", "sad", seed=12), SAMPLED, progress=cancel)


@pytest.mark.parametrize("request_kwargs,error,match", [
    (dict(edit_type="emotoin", edit_value="happy"), VocabularyError, "emotion"),
    (dict(edit_type="emotion", edit_value="hapy"), VocabularyError, "happy"),
    (dict(edit_type="style", edit_value="whisper", n_iterations=6), ValueError, "from 1 to 5"),
    (dict(edit_type="paralinguistic"), ValueError, "new_text"),
    (dict(edit_type="emotion", edit_value="happy", audio_text=" "), ValueError, "transcript"),
])
def test_bad_requests_fail_before_any_work(engine, clip, request_kwargs, error, match):
    wav, sr = crop(clip, 1.0)
    kwargs = dict(audio=wav, sample_rate=sr, audio_text=TEXT)
    kwargs.update(request_kwargs)
    good = EditRequest(wav, sr, TEXT, "emotion", "happy")
    with pytest.raises(error, match=match) as info:
        engine.batch_edit([good, EditRequest(**kwargs)], SAMPLED)
    assert "edit request 2 of 2" in str(info.value)


def test_bad_audio_is_a_clear_error(engine):
    with pytest.raises(AudioInputError, match="0.5"):
        engine.edit(EditRequest(torch.zeros(1000) + 0.1, 16000, TEXT, "emotion", "happy"))
    with pytest.raises(ValueError, match="empty"):
        engine.clone(CloneRequest(torch.randn(16000) * 0.1, 16000, TEXT, "  "))


def test_missing_model_files_are_listed(tmp_path):
    (tmp_path / "Step-Audio-EditX").mkdir()
    with pytest.raises(ModelFilesError) as info:
        StepAudioEditX(EngineConfig(search_roots=(str(tmp_path),), device="cpu")).load()
    message = str(info.value)
    for name in ("config.json", "tokenizer.model", "flow.pt", "linguistic_tokenizer.npy", "stepfun-ai/Step-Audio-EditX",
                 "stepfun-ai/Step-Audio-Tokenizer", "hf download"):
        assert name in message


def test_device_moves_keep_working(engine, clip):
    wav, sr = crop(clip, 1.0)
    engine.to("cpu")
    assert engine.loaded and engine.device.type == "cpu"
    assert set(engine.modules()) >= {"lm", "flow", "hift", "vq02_encoder", "vq06_tokenizer"}
    check_audio(engine.edit(EditRequest(wav, sr, TEXT, "emotion", "happy", seed=21), SAMPLED))


def test_cached_passes_belong_to_their_settings(engine, clip):
    wav, sr = crop(clip, 1.2)
    request = EditRequest(wav, sr, TEXT, "emotion", "excited", seed=31)
    engine.clear_cache()
    short = engine.edit(request, GenerationSettings(dynamic_tokens=False, max_new_tokens=20))
    again = engine.edit(request, GenerationSettings(dynamic_tokens=False, max_new_tokens=20))
    longer = engine.edit(request, GenerationSettings(dynamic_tokens=False, max_new_tokens=45))
    assert again.passes[0] is short.passes[0]  # same settings: served from the cache
    assert longer.passes[0] is not short.passes[0] and longer.passes[0].max_new_tokens == 45


def test_an_interrupted_pass_is_not_reused(engine, clip):
    wav, sr = crop(clip, 1.2)
    request = EditRequest(wav, sr, TEXT, "emotion", "sad", seed=33)
    engine.clear_cache()
    cut = engine.edit(request, SAMPLED, progress=lambda p: p.stage == "generate" and p.done >= 5)
    assert cut.stop_reason is StopReason.INTERRUPTED
    full = engine.edit(request, SAMPLED)
    assert full.stop_reason is not StopReason.INTERRUPTED and full.passes[0].n_generated_tokens > 5


def test_paralinguistic_iterations_use_the_tagged_text_as_transcript_from_pass_two(engine, clip, monkeypatch):
    """Official loop: pass 1 describes the input with its plain transcript; later passes edit audio that
    already holds the sounds, so their transcript is the tagged text. Other edits keep the plain words."""
    from comfyui_step_audio_editx.engines.step_audio_editx import engine as engine_mod

    seen = []
    real = engine_mod.build_edit_prompt
    monkeypatch.setattr(engine_mod, "build_edit_prompt",
                        lambda tok, et, ev, audio_text, ids, nt, release: seen.append((et, audio_text, nt))
                        or real(tok, et, ev, audio_text, ids, nt, release))
    wav, sr = crop(clip, 1.5)
    plain, tagged = "I just heard the news, and honestly", "I just heard the news [laugh], and honestly"
    fixed = GenerationSettings(max_new_tokens=40, dynamic_tokens=False)
    engine.clear_cache()
    engine.edit(EditRequest(wav, sr, plain, "paralinguistic", None, tagged, n_iterations=3, seed=2), fixed)
    assert seen == [("paralinguistic", plain, tagged), ("paralinguistic", tagged, tagged),
                    ("paralinguistic", tagged, tagged)]
    seen.clear()
    engine.edit(EditRequest(wav, sr, plain, "emotion", "happy", n_iterations=2, seed=2), fixed)
    assert [a for _, a, _ in seen] == [plain, plain]


@pytest.mark.parametrize("release, written", [("2026-01", "[laugh] [chuckle]"), ("2025-11", "[Laughter] [Sigh]")])
def test_prompts_carry_the_tag_spelling_of_the_configured_weights(engine, clip, monkeypatch, release, written):
    """Whatever spelling the user writes, the prompt holds what the configured weights were trained on."""
    from dataclasses import replace as dc_replace

    from comfyui_step_audio_editx.engines.step_audio_editx import engine as engine_mod
    from comfyui_step_audio_editx.engines.step_audio_editx.prompts import render_edit_prompt

    rendered = []
    real = engine_mod.build_edit_prompt
    monkeypatch.setattr(engine_mod, "build_edit_prompt",
                        lambda tok, *a: rendered.append(render_edit_prompt(*a)) or real(tok, *a))
    monkeypatch.setattr(engine, "config", dc_replace(engine.config, weights_release=release))
    wav, sr = crop(clip, 1.0)
    user_text = "Hello [Laughter] [chuckle] there" if release == "2026-01" else "Hello [laugh] [sigh] there"
    engine.clear_cache()
    engine.edit(EditRequest(wav, sr, "Hello there", "paralinguistic", None, user_text, seed=1),
                GenerationSettings(max_new_tokens=10, dynamic_tokens=False))
    assert f"the new text is : Hello {written} there\n" in rendered[0]


def test_original_weights_refuse_a_tag_they_never_learnt_before_any_work(engine, clip, monkeypatch):
    from dataclasses import replace as dc_replace

    monkeypatch.setattr(engine, "config", dc_replace(engine.config, weights_release="2025-11"))
    wav, sr = crop(clip, 1.0)
    with pytest.raises(ValueError, match=r"not trained on \[chuckle\]"):
        engine.edit(EditRequest(wav, sr, "Hello there", "paralinguistic", None, "Hello [chuckle] there"))
    with pytest.raises(VocabularyError, match="Unknown weights release"):
        EngineConfig(weights_release="2024-06")


def _with_pass_one_output(monkeypatch, engine, make_waveform):
    """Replace what pass 1 returns (only its waveform), so the loop's handling of odd lengths is exercised."""
    real = StepAudioEditX._run_pass

    def run_pass(self, parts, jobs, settings, progress, call, calls):
        out = real(self, parts, jobs, settings, progress, call, calls)
        if call == 1:
            for p in out:
                p.waveform = make_waveform()
        return out

    monkeypatch.setattr(StepAudioEditX, "_run_pass", run_pass)


@pytest.mark.parametrize("seconds", [40.0, 0.3], ids=["longer_than_30s", "shorter_than_half_a_second"])
def test_iterations_continue_on_intermediate_audio_outside_the_input_limits(engine, clip, monkeypatch, seconds):
    """Pass 1 of an edit may come out 40 s long (a slowed 20 s clip) or very short: pass 2 still runs on it,
    as the official loop does (vq06 splits at 30 s); the user-input limits apply to the user's clip only."""
    wav, sr = clip
    at24k = torch.nn.functional.interpolate(wav[None, None], scale_factor=C.OUTPUT_SAMPLE_RATE / sr)[0, 0]
    n = int(seconds * C.OUTPUT_SAMPLE_RATE)
    long_or_short = at24k.repeat(n // at24k.shape[0] + 1)[:n]
    _with_pass_one_output(monkeypatch, engine, lambda: long_or_short.clone())
    engine.clear_cache()
    request = EditRequest(*crop(clip, 1.5), TEXT, "speed", "more slower", n_iterations=2, seed=4)
    result = engine.edit(request, GenerationSettings(max_new_tokens=20, dynamic_tokens=False))
    assert len(result.passes) == 2 and result.warnings == []
    # pass 2's prompt holds the intermediate audio: 12.5 + 25 ids per second (vq02 + vq06), whole groups
    audio_ids = result.passes[1].n_prompt_tokens - result.passes[0].n_prompt_tokens
    assert audio_ids > 0 if seconds > 1.5 else audio_ids < 0
    with pytest.raises(AudioInputError, match="at most 30 s" if seconds > 30 else "at least 0.5 s"):
        engine.edit(EditRequest(long_or_short, C.OUTPUT_SAMPLE_RATE, TEXT, "speed", "faster"))
    if seconds > 30:  # all of it is tokenised (vq06 in 30 s pieces, as official), not just the first 30 s
        ctx = engine._parts.frontend.encode([(long_or_short, C.OUTPUT_SAMPLE_RATE)], user_input=False)[0]
        assert seconds - 2.0 <= ctx.n_groups * C.GROUP_SECONDS <= seconds + 0.5  # each piece rounds up


def test_a_pass_that_cannot_run_returns_the_passes_done_with_a_warning(engine, clip, monkeypatch):
    _with_pass_one_output(monkeypatch, engine, lambda: torch.zeros(0))  # pass 1 produced no audio
    engine.clear_cache()
    result = engine.edit(EditRequest(*crop(clip, 1.5), TEXT, "emotion", "sad", n_iterations=3, seed=4),
                         GenerationSettings(max_new_tokens=10, dynamic_tokens=False))
    assert len(result.passes) == 1 and result.waveform.numel() == 0
    assert len(result.warnings) == 1
    assert "pass 2 of 3 could not run (audio is empty" in result.warnings[0] and "1 pass(es)" in result.warnings[0]


def test_a_fed_back_clip_that_cannot_be_edited_comes_back_unchanged(engine, clip):
    """EditRequest.intermediate (a cloned chunk): a silent clip is not an error but an unchanged result."""
    silent = torch.zeros(C.OUTPUT_SAMPLE_RATE // 4)
    result = engine.edit(EditRequest(silent, C.OUTPUT_SAMPLE_RATE, TEXT, "emotion", "sad", intermediate=True))
    assert result.passes == [] and torch.equal(result.waveform, silent)
    assert "pass 1 of 1 could not run (audio is silent" in result.warnings[0]
    with pytest.raises(AudioInputError, match="at least 0.5 s"):  # as user input it is an error
        engine.edit(EditRequest(silent, C.OUTPUT_SAMPLE_RATE, TEXT, "emotion", "sad"))


def test_fed_back_audio_shorter_than_one_group_is_a_warning_not_a_crash(engine):
    """Kaldi's fbank asserts on clips shorter than a frame; fed-back audio that short ends with a warning."""
    tiny = torch.zeros(100)
    tiny[50] = 0.5
    result = engine.edit(EditRequest(tiny, C.OUTPUT_SAMPLE_RATE, TEXT, "emotion", "sad", intermediate=True),
                         GenerationSettings(max_new_tokens=10, dynamic_tokens=False))
    assert result.passes == [] and result.warnings == [
        "WARNING: pass 1 of 1 could not run (audio is 0.004 s long, shorter than one 120 ms token group: too short "
        "to tokenise); the result is the 0 pass(es) before it."]
    one_group = torch.zeros(C.SAMPLES_PER_GROUP)
    one_group[1000] = 0.5  # the shortest output a pass can give: it is edited
    result = engine.edit(EditRequest(one_group, C.OUTPUT_SAMPLE_RATE, TEXT, "emotion", "sad", intermediate=True),
                         GenerationSettings(max_new_tokens=10, dynamic_tokens=False))
    assert len(result.passes) == 1 and result.warnings == []
