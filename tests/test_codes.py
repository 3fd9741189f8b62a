"""Interleave (codes -> LM ids) and regroup (LM ids -> decoder frames) against the official lists."""

import pytest

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.codes import audio_token_string, interleave, regroup

pytestmark = pytest.mark.parity


def test_interleave_matches_official_wav2token(parity):
    ref = parity.json("interleave_reshape")
    for name, case in ref["cases"].items():
        if "vq02" not in case:
            continue
        ids = interleave(case["vq02"], case["vq06"])
        assert ids == case["vq0206_with_offsets"], name
        assert ids == case["token_str_ids"], name
        assert audio_token_string(ids) == case["token_str"], name
        groups = min(len(case["vq02"]) // 2, len(case["vq06"]) // 3)
        assert len(ids) == C.TOKENS_PER_GROUP * groups


def test_regroup_matches_official_reshape(parity):
    ref = parity.json("interleave_reshape")
    npz = parity.npz("interleave_reshape")
    for name, case in ref["cases"].items():
        if "vq0206_with_offsets" in case:
            ids = case["vq0206_with_offsets"]
        else:
            ids = [C.AUDIO_TOKEN_OFFSET + c for c in case["generated_minus_65536"]]
        frames = regroup(ids)
        assert [list(f) for f in frames] == npz[f"{name}_reshape"].tolist(), name
        assert len(frames) == 3 * -(-len(ids) // C.TOKENS_PER_GROUP)


def test_rates_are_consistent():
    assert C.AUDIO_TOKENS_PER_SECOND == pytest.approx(41.667, abs=1e-3)
    assert C.SAMPLES_PER_GROUP == 2880
    assert C.VQ06_LAST_ID == 70655 and C.VQ02_LAST_ID == 66559
    assert C.DECODER_CODEBOOK_SIZE == 5121
