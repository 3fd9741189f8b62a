"""The compressed-tensors ``pack-quantized`` reader and our quantizer, against files the compressed-tensors
library itself wrote (``tests/fixtures/compressed_tensors``, made by its ``make_fixture.py``), and loading a
quantized Step1 folder (official AWQ layout, and quantize-on-load from bf16)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import (
    QuantFormatError,
    QuantLinear,
    QuantScheme,
    dequantize,
    pack,
    quantize,
    unpack,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.loading import (
    parse_quantization_config,
    scheme_for_choice,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import Step1CheckpointError, load_step1
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).parent / "fixtures" / "compressed_tensors"
PRESETS = {"w4a16": 4, "w8a16": 8}


def _fixture(stem: str) -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(str(FIXTURES / f"{stem}.safetensors")), json.loads((FIXTURES / f"{stem}.json").read_text())


def _float_layers(meta: dict) -> dict[str, torch.Tensor]:
    """The bf16 weights make_fixture.py quantized (same seed, shapes and order)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ct_fixture_source", FIXTURES / "source_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SEED == meta["seed"]
    return module.float_layers()


@pytest.mark.parametrize("stem", sorted(PRESETS))
def test_dequantized_weights_equal_what_compressed_tensors_decodes(stem):
    tensors, meta = _fixture(stem)
    scheme = parse_quantization_config(meta["quantization_config"])
    assert scheme == QuantScheme(PRESETS[stem], 128)
    assert len(meta["decompressed"]) == 14
    for name, want in meta["decompressed"].items():
        assert tensors[f"{name}.weight_shape"].tolist() == want["shape"]
        weight = dequantize(tensors[f"{name}.weight_packed"], tensors[f"{name}.weight_scale"], scheme)
        assert str(weight.dtype) == want["dtype"] and list(weight.shape) == want["shape"]
        digest = hashlib.sha256(weight.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
        assert digest == want["sha256"], name


@pytest.mark.parametrize("stem", sorted(PRESETS))
def test_our_quantizer_writes_the_same_words_and_scales_as_compressed_tensors(stem):
    tensors, meta = _fixture(stem)
    scheme = QuantScheme(PRESETS[stem], 128)
    for name, weight in _float_layers(meta).items():
        packed, scales = quantize(weight, scheme)
        assert torch.equal(scales, tensors[f"{name}.weight_scale"]), name
        assert torch.equal(packed, tensors[f"{name}.weight_packed"]), name


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_unpack_roundtrip_and_bit_layout(bits):
    scheme = QuantScheme(bits, 32)
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(scheme.qmin, scheme.qmax + 1, (5, 64), generator=gen, dtype=torch.int8)
    words = pack(q, bits)
    assert words.dtype == torch.int32 and words.shape == (5, 64 * bits // 32)
    assert torch.equal(unpack(words, bits), q)
    # element e of a row sits at bit e * bits of the row's stream, stored with offset 2^(bits-1)
    first = int(words[0, 0]) & 0xFFFFFFFF
    for i in range(32 // bits):
        assert (first >> (bits * i)) & ((1 << bits) - 1) == int(q[0, i]) + (1 << (bits - 1))


def test_unsupported_quantization_configs_are_refused_with_the_reason():
    _, meta = _fixture("w4a16")
    base = meta["quantization_config"]
    cases = {
        "asymmetric": ("weights", "symmetric", False),
        "activations": ("group", "input_activations", {"num_bits": 8, "type": "int"}),
        "channel": ("weights", "strategy", "channel"),
        "3-bit": ("weights", "num_bits", 3),
    }
    for expected, (where, key, value) in cases.items():
        config = json.loads(json.dumps(base))
        target = config["config_groups"]["group_0"]
        (target["weights"] if where == "weights" else target)[key] = value
        with pytest.raises(QuantFormatError, match=expected.split("-")[0] if expected != "3-bit" else "3-bit"):
            parse_quantization_config(config)
    with pytest.raises(QuantFormatError, match="gptq"):
        parse_quantization_config({"quant_method": "gptq"})
    with pytest.raises(ValueError, match="int4"):
        scheme_for_choice("int3")


# --- loading a quantized Step1 folder ---------------------------------------------------------------------

MINI = dict(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_attention_groups=1,
            num_hidden_layers=2, vocab_size=512, max_seq_len=256, rms_norm_eps=1e-5)


def _mini_folder(root: Path, stem: str | None) -> Path:
    """config.json + model.safetensors: the fixture's packed layers (or their bf16 source) + random rest."""
    folder = root / (stem or "bf16")
    folder.mkdir(parents=True)
    _, meta = _fixture("w4a16")
    tensors = dict(_float_layers(meta)) if stem is None else dict(_fixture(stem)[0])
    if stem is None:
        tensors = {f"{k}.weight": v for k, v in tensors.items()}
    gen = torch.Generator().manual_seed(5)
    rand = lambda *s: (torch.randn(*s, generator=gen) * 0.05).to(torch.bfloat16)  # noqa: E731
    tensors["model.embed_tokens.weight"] = rand(MINI["vocab_size"], MINI["hidden_size"])
    tensors["lm_head.weight"] = rand(MINI["vocab_size"], MINI["hidden_size"])
    tensors["model.norm.weight"] = 1 + rand(MINI["hidden_size"])
    for i in range(MINI["num_hidden_layers"]):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{i}.{norm}.weight"] = 1 + rand(MINI["hidden_size"])
    save_file(tensors, str(folder / "model.safetensors"))
    config = {"model_type": "step1", "architectures": ["Step1ForCausalLM"], "torch_dtype": "bfloat16", **MINI}
    if stem is not None:
        config["quantization_config"] = meta["quantization_config"] if stem == "w4a16" else _fixture(stem)[1][
            "quantization_config"]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _reference_logits(folder: Path, stem: str, ids: torch.Tensor) -> torch.Tensor:
    """A float Step1 whose projections hold the fixture's dequantized weights (equal to compressed-tensors')."""
    tensors, meta = _fixture(stem)
    scheme = parse_quantization_config(meta["quantization_config"])
    plain = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if not k.split(".")[-1].startswith(
        ("weight_packed", "weight_scale", "weight_shape"))}
    for name in meta["decompressed"]:
        plain[f"{name}.weight"] = dequantize(tensors[f"{name}.weight_packed"], tensors[f"{name}.weight_scale"], scheme)
    model = Step1ForCausalLM(Step1Config(**MINI)).eval()
    model.load_state_dict({k: v.float() for k, v in plain.items()})
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("stem", sorted(PRESETS))
def test_compressed_tensors_folder_loads_quantized_and_matches_dequantized_float_model(stem, tmp_path):
    folder = _mini_folder(tmp_path, stem)
    model = load_step1(folder, device="cpu", dtype="fp32")
    quantized = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(quantized) == 14 and all(m.scheme.bits == PRESETS[stem] for m in quantized)
    assert quantized[0].weight_scale.dtype == torch.bfloat16  # rounding of q * scale as stored
    ids = torch.tensor([[1, 4, 9, 78, 300, 17, 2, 511]])
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.equal(logits, _reference_logits(folder, stem, ids))


def test_quantize_on_load_equals_quantizing_the_loaded_bf16_weights(tmp_path):
    folder = _mini_folder(tmp_path, None)
    model = load_step1(folder, device="cpu", dtype="fp32", quantize="int4")
    q_proj = model.model.layers[1].self_attn.q_proj
    assert isinstance(q_proj, QuantLinear) and q_proj.scheme == QuantScheme(4, 128)
    source = load_file(str(folder / "model.safetensors"))["model.layers.1.self_attn.q_proj.weight"]
    packed, scales = quantize(source, QuantScheme(4, 128))
    assert torch.equal(q_proj.weight_packed, packed) and torch.equal(q_proj.weight_scale, scales)
    # the same bf16 weights through compressed-tensors (fixture) give the same file contents
    tensors, _ = _fixture("w4a16")
    assert torch.equal(q_proj.weight_packed, tensors["model.layers.1.self_attn.q_proj.weight_packed"])
    int8 = load_step1(folder, device="cpu", dtype="fp32", quantize="int8")
    assert int8.model.layers[0].mlp.down_proj.scheme.bits == 8
    assert isinstance(int8.lm_head, torch.nn.Linear) and int8.lm_head.weight.dtype == torch.float32


def test_packed_tensors_without_a_quantization_config_are_a_clear_error(tmp_path):
    folder = _mini_folder(tmp_path, "w4a16")
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(Step1CheckpointError, match="quantization_config"):
        load_step1(folder, device="cpu", dtype="fp32")


def test_a_quantized_folder_ignores_a_different_on_load_request(tmp_path, caplog):
    folder = _mini_folder(tmp_path, "w4a16")
    model = load_step1(folder, device="cpu", dtype="fp32", quantize="int8")
    assert model.model.layers[0].mlp.up_proj.scheme.bits == 4
    assert "already quantized" in caplog.text
    shutil.rmtree(folder)


def test_fp16_models_keep_fp16_scales_and_compute_dequantize_then_matmul(tmp_path):
    """GPUs without bf16 run fp16: scales are converted once, and the layer is q * scale (fp16) @ x exactly."""
    folder = _mini_folder(tmp_path, "w4a16")
    model = load_step1(folder, device="cpu", dtype="fp16")
    down = model.model.layers[0].mlp.down_proj
    assert down.weight_scale.dtype == torch.float16
    tensors, _ = _fixture("w4a16")
    assert torch.equal(down.weight_scale, tensors["model.layers.0.mlp.down_proj.weight_scale"].half())
    x = torch.randn(3, 256, dtype=torch.float16)
    weight = unpack(down.weight_packed, 4).half().view(128, -1, 128) * down.weight_scale.unsqueeze(-1)
    assert torch.equal(down(x), torch.nn.functional.linear(x, weight.view(128, 256)))
