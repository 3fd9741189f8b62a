"""Our S3 tokenizer port against the ``s3tokenizer`` package (test extra only, never a runtime dependency):
the same mel filters and log-mels, the same codes from the same weights, the same ONNX conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper

from comfyui_step_audio_editx.engines.step_audio_editx.frontend.s3_model import (
    S3Config,
    S3Tokenizer,
    log_mel_spectrogram,
    mel_filters,
    pad_mels,
)
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.s3_onnx import onnx_state_dict
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.semantic import random_s3tokenizer

s3 = pytest.importorskip("s3tokenizer", reason="the s3tokenizer reference package (pip install -e '.[test]')")

TINY = dict(n_audio_state=32, n_audio_head=2, n_audio_layer=2, n_codebook_size=64)


def _noise(seconds: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    return 0.1 * torch.randn(t.shape, generator=gen) + 0.3 * torch.sin(2 * torch.pi * 220 * t)


def _reference(ours: S3Tokenizer, use_sdpa: bool = False):
    config = s3.model.ModelConfig(**{k: getattr(ours.config, k) for k in (
        "n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_codebook_size")},
        use_sdpa=use_sdpa)
    ref = s3.S3Tokenizer(ours.name, config=config)
    ref.load_state_dict(ours.state_dict(), strict=True)  # the same parameter names
    return ref.eval()


def test_default_config_is_the_v1_tokenizer():
    ours = {k: v for k, v in vars(S3Config()).items() if k != "use_sdpa"}
    theirs = {k: v for k, v in vars(s3.model.ModelConfig()).items() if k != "use_sdpa"}
    assert ours == theirs


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_librosa_as_shipped(n_mels):
    from s3tokenizer.utils import _mel_filters

    theirs = _mel_filters("cpu", n_mels)  # librosa's, stored by the package; ours are computed in float64
    assert torch.allclose(mel_filters(n_mels), theirs, rtol=2.4e-7, atol=0)  # within two float32 steps


def test_log_mel_matches():
    for seconds, seed in ((0.51, 1), (3.3, 2), (30.0, 3)):
        wav = _noise(seconds, seed)
        ours, theirs = log_mel_spectrogram(wav, 128), s3.log_mel_spectrogram(wav, n_mels=128)
        assert ours.shape == theirs.shape and float((ours - theirs).abs().max()) < 1e-6


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_codes_match_on_a_padded_batch(use_sdpa):
    ours = random_s3tokenizer(seed=4, **TINY)
    ours.encoder.blocks[0].attn.use_sdpa = ours.encoder.blocks[1].attn.use_sdpa = use_sdpa
    ref = _reference(ours, use_sdpa)
    mels = [s3.log_mel_spectrogram(_noise(s, i), n_mels=128) for i, s in enumerate((0.7, 2.9, 1.6))]
    mel, lengths = pad_mels(mels)
    ref_mel, ref_lengths = s3.padding(mels)
    assert torch.equal(mel, ref_mel) and torch.equal(lengths, ref_lengths)
    codes, code_lengths = ours.quantize(mel, lengths)
    ref_codes, ref_code_lengths = ref.quantize(mel, lengths)
    assert torch.equal(code_lengths, ref_code_lengths)
    for row, n in enumerate(code_lengths.tolist()):
        assert torch.equal(codes[row, :n], ref_codes[row, :n])
    with torch.inference_mode():
        hidden, _ = ours.encoder(mel, lengths)
        ref_hidden, _ = ref.encoder(mel, lengths)
    assert float((hidden - ref_hidden).abs().max()) < 1e-5


def test_codes_match_from_audio():
    """The whole path, our mel included, on clips of several lengths."""
    ours = random_s3tokenizer(seed=8, **TINY)
    ref = _reference(ours)
    for seconds, seed in ((0.6, 1), (4.2, 2), (12.5, 3)):
        wav = _noise(seconds, seed)
        ours_mel, theirs_mel = log_mel_spectrogram(wav, 128), s3.log_mel_spectrogram(wav, n_mels=128)
        n = torch.tensor([ours_mel.shape[1]])
        assert torch.equal(ours.quantize(ours_mel[None], n)[0], ref.quantize(theirs_mel[None], n)[0])


def _synthetic_onnx(model: S3Tokenizer, path, conv_names=("encoders.conv1.weight", "encoders.conv1.bias",
                                                          "encoders.conv2.weight", "encoders.conv2.bias")) -> None:
    """The weights under the official export's names, plus initializers that are not parameters."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    inits, nodes = [], []

    def node(op: str, name: str, arrays: dict[str, np.ndarray]) -> None:
        inits.extend(numpy_helper.from_array(a, n) for n, a in arrays.items())
        nodes.append(helper.make_node(op, ["x", *arrays], [name + "_out"], name=name))

    for name, key in zip(conv_names, ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")):
        node("Conv", f"/{key}", {name: sd[f"encoder.{key}"]})
    node("Add", "/Add_pos", {"encoders.positional_embedding": sd["encoder.positional_embedding"]})
    for b in range(model.config.n_audio_layer):
        p = f"encoder.blocks.{b}."
        for lin, onnx_name, bias_op in (("attn.query", "attn/query", "Add"), ("attn.key", "attn/key", None),
                                        ("attn.value", "attn/value", "Add_1"), ("attn.out", "attn/out", "Add"),
                                        ("mlp.0", "mlp/mlp.0", "Add"), ("mlp.2", "mlp/mlp.2", "Add")):
            node("MatMul", f"/blocks.{b}/{onnx_name}/MatMul", {f"w{b}{lin}": np.ascontiguousarray(sd[p + lin + ".weight"].T)})
            if bias_op:
                node("Add", f"/blocks.{b}/{onnx_name}/{bias_op}", {f"b{b}{lin}": sd[p + lin + ".bias"]})
        for ln in ("attn_ln", "mlp_ln"):
            node("LayerNormalization", f"/blocks.{b}/{ln}/LayerNormalization",
                 {f"s{b}{ln}": sd[p + ln + ".weight"], f"o{b}{ln}": sd[p + ln + ".bias"]})
    node("Pow", "/quantizer/rq/model/layers.0/_codebook/Pow_1",
         {"codebook": np.ascontiguousarray(sd["quantizer._codebook.embed"].T)})
    node("Mul", "/quantizer/rq/model/layers.0/_codebook/Mul", {"two": np.array(2.0, np.float32)})  # not a parameter
    import onnx

    onnx.save(helper.make_model(helper.make_graph(nodes, "s3", inputs=[], outputs=[], initializer=inits)), str(path))


@pytest.mark.parametrize("conv_names", [
    ("encoders.conv1.weight", "encoders.conv1.bias", "encoders.conv2.weight", "encoders.conv2.bias"),
    ("onnx::Conv_1519", "onnx::Conv_1520", "onnx::Conv_1521", "onnx::Conv_1522"),
])
def test_onnx_conversion_matches(tmp_path, conv_names):
    model = random_s3tokenizer(seed=6, **TINY)
    path = tmp_path / "speech_tokenizer_v1.onnx"
    _synthetic_onnx(model, path, conv_names)
    ours, theirs = onnx_state_dict(path), s3.onnx2torch(str(path), None, False)
    assert ours.keys() == theirs.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(ours[key], theirs[key]) and torch.equal(ours[key], value), key
