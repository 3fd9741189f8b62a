"""Transcription parity with the official FunASR streaming Paraformer (fixtures written by
``tests/fixtures/asr/make_asr_fixtures.py``): per-chunk windows, CIF alphas and firing positions,
greedy token ids (blanks included), text, and token timestamps, on the tiny model of make-tiny-model
and on the parity set's Paraformer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx.asr import Transcriber, asr_layout, postprocess
from comfyui_step_audio_editx.engines.step_audio_editx.asr.transcriber import ASR_STREAMING

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "asr"
sys.path.insert(0, str(FIXTURES))
from clips import clip_digest, fixture_clips  # noqa: E402

ALPHA_ATOL = 1e-5


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"asr_{name}.json").read_text(encoding="utf-8"))


def _check(transcriber: Transcriber, ref: dict) -> None:
    clips = fixture_clips()
    names = list(clips)
    results = transcriber.transcribe([torch.from_numpy(clips[n]) for n in names])  # one batch, all clips
    for name, res in zip(names, results):
        want = ref["clips"][name]
        assert clip_digest(clips[name]) == want["digest"], f"{name}: fixture clip generation changed"
        layout, chunks = asr_layout(len(clips[name]), transcriber.frontend.config, ASR_STREAMING)
        assert list(layout.enc_lens) == want["chunk_windows"], name
        assert list(res.fire_frames) == want["fire_frames"], name
        all_ids = [i for i in want["ids"]]
        kept = [i for i in all_ids if i not in (0, 1, 2)]
        assert list(res.token_ids) == kept, name
        assert res.text == want["text"], name
        kept_spans = [s for i, s in zip(all_ids, want["spans"]) if i not in (0, 1, 2)]
        np.testing.assert_allclose(np.asarray(res.spans).reshape(-1, 2), np.asarray(kept_spans).reshape(-1, 2),
                                   atol=1e-9, err_msg=name)


def _check_alphas(transcriber: Transcriber, ref: dict) -> None:
    """The predictor's masked alphas per chunk window, against the official module's output."""
    clips = fixture_clips()
    wav = torch.from_numpy(clips["long"])
    cfg = transcriber.frontend.config
    layout, _ = asr_layout(len(wav), cfg, ASR_STREAMING)
    feats = transcriber.frontend(wav)[: layout.num_frames]
    windows, packed, _ = transcriber.encoder.encode_windows([feats], [layout], ASR_STREAMING)
    alphas = transcriber.predictor.alphas(windows * packed.window_valid[..., None]).numpy()
    want = ref["clips"]["long"]["alphas"]
    assert len(want) == alphas.shape[0]
    for g, row in enumerate(want):
        ours = alphas[g, : len(row)].copy()
        if g < len(want) - 1:
            ours[sum(ASR_STREAMING.chunk_size[:2]):] = 0.0
        np.testing.assert_allclose(ours, row, atol=ALPHA_ATOL, err_msg=f"chunk {g}")


def test_tiny_model_matches_funasr(tiny_model_root):
    transcriber = Transcriber.from_folder(tiny_model_root / "Step-Audio-Tokenizer", dither=0.0)
    ref = _fixture("tiny")
    _check(transcriber, ref)
    _check_alphas(transcriber, ref)


@pytest.mark.parity
def test_parity_set_matches_funasr(parity):
    transcriber = Transcriber.from_folder(parity.tokenizer_dir, dither=0.0)
    ref = _fixture("parity_a")
    _check(transcriber, ref)
    _check_alphas(transcriber, ref)


def test_one_clip_at_a_time_equals_batch(tiny_model_root):
    transcriber = Transcriber.from_folder(tiny_model_root / "Step-Audio-Tokenizer", dither=0.0)
    clips = [torch.from_numpy(c) for c in fixture_clips().values()]
    batch = transcriber.transcribe(clips)
    for clip, res in zip(clips, batch):
        single = transcriber.transcribe([clip])[0]
        assert single.token_ids == res.token_ids and single.spans == res.spans


def test_postprocess_matches_funasr():
    cases = json.loads((FIXTURES / "postprocess.json").read_text(encoding="utf-8"))
    assert len(cases) >= 10
    for case in cases:
        assert postprocess(case["tokens"]) == case["text"], case
