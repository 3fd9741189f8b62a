"""vq02 parity: our streaming SAN-M Paraformer against the official FunASR path (reference/vq02.*).

Checks the LFR + CMVN features fed to the encoder, the per-chunk lengths, the encoder output and the
codes, for every wav variant in the set (float and PCM16 round trip), batched and one clip at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx.frontend.paraformer import Vq02Tokenizer

pytestmark = pytest.mark.parity

ATOL = 1e-4  # parity README: frontend_feats and enc_out


def _variants(parity) -> dict[str, np.ndarray]:
    """Variant name -> input wav: ``X_codes`` in the npz names a variant; its input is ``X`` or ``wav16k``."""
    ref = parity.npz("vq02")
    names = [k[: -len("_codes")] for k in ref.files if k.endswith("_codes")]
    assert names, "vq02 reference has no *_codes arrays"
    return {n: ref[n] if n in ref.files else ref["wav16k"] for n in names}


@pytest.fixture(scope="module")
def tokenizer(parity) -> Vq02Tokenizer:
    # The reference ran FunASR with dither 0 (reference/vq02.json "frontend"); the pack dithers by default.
    assert parity.json("vq02")["frontend"]["dither"] == 0.0
    return Vq02Tokenizer.from_folder(parity.tokenizer_dir, dither=0.0)


def _check(parity, name: str, result) -> None:
    ref = parity.npz("vq02")
    assert list(result.layout.feat_lens) == ref[f"{name}_chunk_feat_lens"].tolist(), name
    assert list(result.layout.enc_lens) == ref[f"{name}_chunk_enc_lens"].tolist(), name
    np.testing.assert_allclose(
        result.features.cpu().numpy(), ref[f"{name}_frontend_feats"], atol=ATOL, rtol=0, err_msg=name
    )
    np.testing.assert_allclose(result.enc_out.cpu().numpy(), ref[f"{name}_enc_out"], atol=ATOL, rtol=0, err_msg=name)
    np.testing.assert_array_equal(result.codes.numpy(), ref[f"{name}_codes"], err_msg=name)
    top2 = torch.cdist(
        result.enc_out.float().cpu(), torch.from_numpy(np.load(parity.tokenizer_dir / "linguistic_tokenizer.npy"))
    )
    top2 = top2.topk(2, largest=False).values.numpy()
    np.testing.assert_allclose(top2, ref[f"{name}_cdist_top2"], atol=1e-3, rtol=0, err_msg=name)


def test_vq02_batched_matches_official(parity, tokenizer):
    variants = _variants(parity)
    results = tokenizer.encode_detailed([torch.from_numpy(w) for w in variants.values()])
    for name, result in zip(variants, results, strict=True):
        _check(parity, name, result)


def test_vq02_single_clip_matches_official(parity, tokenizer):
    for name, wav in _variants(parity).items():
        _check(parity, name, tokenizer.encode_detailed([torch.from_numpy(wav)])[0])
        codes = tokenizer.encode([torch.from_numpy(wav)])[0]
        assert codes.dtype == torch.int64 and codes.device.type == "cpu"


def test_vq02_dims_come_from_the_folder(parity, tokenizer):
    dims = parity.json("reference")["dims"]["para"]
    cfg = tokenizer.encoder.cfg
    assert (cfg.output_size, cfg.attention_heads, cfg.linear_units, cfg.num_blocks) == (
        dims["output_size"],
        dims["attention_heads"],
        dims["linear_units"],
        dims["num_blocks"],
    )
    assert cfg.input_size == parity.npz("vq02")[f"{next(iter(_variants(parity)))}_frontend_feats"].shape[1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vq02_cuda_matches_official(parity):
    gpu = Vq02Tokenizer.from_folder(parity.tokenizer_dir, device="cuda", dither=0.0)
    variants = _variants(parity)
    for name, result in zip(
        variants, gpu.encode_detailed([torch.from_numpy(w).cuda() for w in variants.values()]), strict=True
    ):
        _check(parity, name, result)
