"""vq06: S3 tokenizer loading from the safetensors cache, the ONNX -> cache conversion, and code counts.

No real ``speech_tokenizer_v1.onnx`` is available in CI. The conversion tests build a synthetic ONNX
file that carries a tiny tokenizer's weights under the initializer / node names of the official export
(``frontend/s3_onnx.py``) that the converter reads (it only walks names; the graph is never run). What stays untested here: that the
official ONNX really uses those names and that its torch port matches onnxruntime's outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from comfyui_step_audio_editx.engines.step_audio_editx.frontend import semantic
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.semantic import (
    CACHE_SUFFIX,
    S3CacheError,
    Vq06Tokenizer,
    cache_path_next_to,
    cached_weights,
    random_s3tokenizer,
    save_s3tokenizer,
    vq06_code_count,
    vq06_pieces,
)

TINY = dict(n_audio_state=32, n_audio_head=2, n_audio_layer=2, n_codebook_size=64)


@pytest.fixture(scope="module")
def tiny_model():
    return random_s3tokenizer(seed=11, **TINY)


@pytest.fixture(scope="module")
def tiny_path(tiny_model, tmp_path_factory):
    return save_s3tokenizer(tiny_model, tmp_path_factory.mktemp("s3") / f"tiny{CACHE_SUFFIX}")


def _noise(seconds: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * 16000), generator=gen)


def test_cache_file_loads_the_same_weights(tiny_model, tiny_path):
    tok = Vq06Tokenizer.from_safetensors(tiny_path)
    assert tok.model.config.n_audio_state == TINY["n_audio_state"] and tok.model.name == "speech_tokenizer_v1_25hz"
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(tok.model.state_dict()[key], value), key


@pytest.mark.parametrize("samples", [480, 8000, 16000 * 3 + 77, 480000, 480000 + 479, 480000 + 480, 16000 * 31])
def test_code_count_follows_the_official_split(samples):
    pieces = vq06_pieces(samples)
    assert sum(e - s for s, e in pieces) == samples - (samples % 480000 if 0 < samples % 480000 < 480 else 0)
    for s, e in pieces:
        assert abs(vq06_code_count(e - s) - round((e - s) / 16000, 2) * 25) <= 2  # the official assert


def test_tokenizes_deterministically_at_25_hz(tiny_path, tiny_model):
    tok = Vq06Tokenizer.from_safetensors(tiny_path)
    wavs = [_noise(s, i) for i, s in enumerate((0.5, 2.0, 3.37))]
    first, second = tok.encode(wavs), tok.encode(wavs)
    for wav, a, b in zip(wavs, first, second, strict=True):
        assert torch.equal(a, b)
        assert a.dtype == torch.int64 and a.shape[0] == vq06_code_count(wav.shape[0])
        assert int(a.min()) >= 0 and int(a.max()) < TINY["n_codebook_size"]
        assert torch.equal(tok.encode([wav])[0], a)  # batched == one clip at a time
    assert [c.shape[0] for c in first] == [13, 50, 85]
    assert len({int(c) for c in first[2]}) > 3
    # the same codes as the model itself on the same mel
    mel = tok.log_mel(wavs[1])
    assert mel.shape == (128, wavs[1].shape[0] // 160)
    codes, _ = tiny_model.quantize(mel[None], torch.tensor([mel.shape[1]]))
    assert torch.equal(codes[0], first[1])


def test_long_clip_is_cut_in_30_s_pieces(tiny_path):
    tok = Vq06Tokenizer.from_safetensors(tiny_path)
    wav = _noise(30.5, 7)
    codes = tok.encode([wav])[0]
    pieces = vq06_pieces(wav.shape[0])
    assert pieces == [(0, 480000), (480000, 488000)]
    assert codes.shape[0] == 750 + 13  # 30 s + 0.5 s
    assert torch.equal(codes, torch.cat(tok.encode([wav[s:e] for s, e in pieces])))


# --- the ONNX -> safetensors cache ---------------------------------------------------------------


def write_synthetic_onnx(model, path) -> None:
    """An ONNX file holding ``model``'s weights under the names of the official export (see ``s3_onnx``)."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    inits, nodes = [], []

    def use(op: str, node_name: str, arrays: dict[str, np.ndarray]) -> None:
        for name, arr in arrays.items():
            inits.append(numpy_helper.from_array(arr, name))
        nodes.append(helper.make_node(op, ["x", *arrays], [node_name + "_out"], name=node_name))

    for part in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "positional_embedding"):
        use("Identity", f"/{part}", {f"encoders.{part}": sd[f"encoder.{part}"]})
    blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.blocks.")})
    for b in blocks:
        p = f"encoder.blocks.{b}."
        for lin, onnx_name in (
            ("attn.query", "attn/query"),
            ("attn.key", "attn/key"),
            ("attn.value", "attn/value"),
            ("attn.out", "attn/out"),
            ("mlp.0", "mlp/mlp.0"),
            ("mlp.2", "mlp/mlp.2"),
        ):
            use(
                "MatMul",
                f"/blocks.{b}/{onnx_name}/MatMul",
                {f"w{b}_{lin}": np.ascontiguousarray(sd[p + lin + ".weight"].T)},
            )
            if p + lin + ".bias" in sd:
                use("Add", f"/blocks.{b}/{onnx_name}/Add", {f"b{b}_{lin}": sd[p + lin + ".bias"]})
        for ln in ("attn_ln", "mlp_ln"):
            use(
                "LayerNormalization",
                f"/blocks.{b}/{ln}/LayerNormalization",
                {f"s{b}_{ln}": sd[p + ln + ".weight"], f"o{b}_{ln}": sd[p + ln + ".bias"]},
            )
    use(
        "Pow",
        "/quantizer/rq/model/layers.0/_codebook/Pow_1",
        {"codebook": np.ascontiguousarray(sd["quantizer._codebook.embed"].T)},
    )
    graph = helper.make_graph(nodes, "synthetic_s3", inputs=[], outputs=[], initializer=inits)
    onnx.save(helper.make_model(graph), str(path))


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_onnx_is_converted_once_and_cached_beside_it(tiny_model, tmp_path, monkeypatch):
    onnx_path = tmp_path / "speech_tokenizer_v1.onnx"
    write_synthetic_onnx(tiny_model, onnx_path)
    tok = Vq06Tokenizer.from_onnx(onnx_path, heads=TINY["n_audio_head"], cache_dir=tmp_path / "user")
    assert cache_path_next_to(onnx_path).is_file() and not (tmp_path / "user").exists()
    assert _same_weights(tok.model, tiny_model)

    def no_conversion(*args, **kwargs):
        raise AssertionError("the ONNX was converted again")

    monkeypatch.setattr(semantic, "onnx_state_dict", no_conversion)
    again = Vq06Tokenizer.from_folder(tmp_path, heads=TINY["n_audio_head"], cache_dir=tmp_path / "user")
    assert _same_weights(again.model, tiny_model)
    wav = _noise(1.2, 3)
    assert torch.equal(again.encode([wav])[0], tok.encode([wav])[0])


def test_changed_onnx_is_converted_again(tiny_model, tmp_path):
    onnx_path = tmp_path / "speech_tokenizer_v1.onnx"
    write_synthetic_onnx(tiny_model, onnx_path)
    cached_weights(onnx_path, heads=TINY["n_audio_head"], cache_dir=tmp_path / "user")
    other = random_s3tokenizer(seed=12, **TINY)
    write_synthetic_onnx(other, onnx_path)
    tok = Vq06Tokenizer.from_onnx(onnx_path, heads=TINY["n_audio_head"], cache_dir=tmp_path / "user")
    assert _same_weights(tok.model, other)


def test_read_only_folder_falls_back_to_the_user_cache(tiny_model, tmp_path, monkeypatch):
    onnx_path = tmp_path / "ro" / "speech_tokenizer_v1.onnx"
    onnx_path.parent.mkdir()
    write_synthetic_onnx(tiny_model, onnx_path)
    real_write = semantic._write_cache

    def refuse_beside_onnx(path, *args, **kwargs):
        if path.parent == onnx_path.parent:
            raise PermissionError(13, "Read-only file system", str(path))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(semantic, "_write_cache", refuse_beside_onnx)
    path = cached_weights(onnx_path, heads=TINY["n_audio_head"], cache_dir=tmp_path / "user")
    assert path.parent == tmp_path / "user" and path.name.endswith(CACHE_SUFFIX)
    assert not cache_path_next_to(onnx_path).exists()
    assert cached_weights(onnx_path, heads=TINY["n_audio_head"], cache_dir=tmp_path / "user") == path  # found again
    assert _same_weights(Vq06Tokenizer.from_safetensors(path).model, tiny_model)


def test_foreign_or_broken_cache_files(tiny_model, tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / f"foreign{CACHE_SUFFIX}"
    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(S3CacheError, match="delete it"):
        Vq06Tokenizer.from_safetensors(foreign)
    onnx_path = tmp_path / "speech_tokenizer_v1.onnx"
    write_synthetic_onnx(tiny_model, onnx_path)
    cache_path_next_to(onnx_path).write_bytes(b"not a safetensors file")
    tok = Vq06Tokenizer.from_onnx(onnx_path, heads=TINY["n_audio_head"], cache_dir=tmp_path / "user")
    assert _same_weights(tok.model, tiny_model)  # rebuilt over the broken file


def test_missing_onnx_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="Step-Audio-Tokenizer"):
        Vq06Tokenizer.from_folder(tmp_path)
