"""The quantized kernels on the GPU against dequantize-then-matmul (every configuration the decode session
may pick, full-size Step1 shapes), and the graph-replayed session of a quantized model against the plain
path. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import (
    QUANT_DOT_CONFIGS,
    QUANT_GEMV_CONFIGS,
    TINYGEMM,
    LinearChoice,
    ResidualStream,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import DecodeOptions
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate, get_decode_session
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import (QuantLinear, QuantScheme, dequantize, quantize,
                                                                       quantize_step1_)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import interleaved, kernels, operand_dot, tinygemm
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.linear import QuantMatrix
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import load_step1
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig, StopReason
from layer_cases import EPS, HIDDEN, INNER, QKV_ROWS, LayerInputs
from layer_cases import rand as _rand
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")
CUDA = torch.device("cuda")


def _matrix(n: int, k: int, bits: int, seed: int) -> QuantMatrix:
    packed, scale = quantize(_rand(n, k, seed=seed) * 0.02, QuantScheme(bits, 128))
    return QuantMatrix(packed, scale, QuantScheme(bits, 128))


def _check_layer_roles(qkv: QuantMatrix, down: QuantMatrix, choice: LinearChoice, rows: int) -> None:
    """qkv and down through ``choice`` against dequantize-then-matmul in float32."""
    layer = LayerInputs.make(rows)
    projected, resid, _ = layer.run(qkv, down, choice)
    expected = ref_ops.rms_norm(layer.resid, layer.norm, EPS).float() @ qkv.dequantized().float().T
    assert _rel(projected, expected) < 5e-3
    reference = layer.resid.float() + ref_ops.silu_mul(layer.gate_up).float() @ down.dequantized().float().T
    assert _rel(resid, reference) < 5e-3


@pytest.mark.parametrize("bits", [4, 8])
def test_gpu_dequantize_kernel_is_bitwise_the_reference(bits):
    m = _matrix(3584, 3072, bits, 1)
    assert torch.equal(kernels.dequantize(m.packed, m.scale, m.scheme), dequantize(m.packed, m.scale, m.scheme))


KERNELS = [LinearChoice("dot", c, f) for c in QUANT_DOT_CONFIGS for f in (True, False)] + \
    [LinearChoice("gemv", c, f) for c in QUANT_GEMV_CONFIGS for f in (True, False)]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("choice", KERNELS, ids=str)
@pytest.mark.parametrize("rows", [1, 16])
def test_quant_kernels_match_dequantize_then_matmul(choice, rows, bits):
    if choice.kernel == "gemv" and rows != 1:
        pytest.skip("gemv runs one row")
    qkv, down = _matrix(QKV_ROWS, HIDDEN, bits, 7), _matrix(HIDDEN, INNER, bits, 8)
    _check_layer_roles(qkv, down, choice, rows)


def test_quant_linear_forward_agrees_across_kernel_and_dequantized_paths():
    module = QuantLinear.from_linear(torch.nn.Linear(3072, 1024, bias=False, device=CUDA, dtype=torch.bfloat16),
                                     QuantScheme(4, 128))
    x = _rand(2, 20, 3072, seed=3)
    whole = module(x)  # 40 rows: dequantize + cuBLAS
    for rows in (1, 7, 16):
        part = module(x.reshape(40, 3072)[:rows])  # the fused kernels
        assert _rel(part, whole.reshape(40, 1024)[:rows]) < 1e-2


@pytest.mark.parity
@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_graph_path_matches_the_plain_path(parity, quantize):
    model = load_step1(parity.editx_dir, device="cuda", dtype="fp32", quantize=quantize)
    get_decode_session(model, DecodeOptions(linear="triton"))
    ref = parity.npz("step1_logits")
    prompts = [ref[f"{n}_input_ids"].tolist() for n in ("seq300", "row0", "seq40", "row1", "row0")]
    caps = [40, 7, 33, 12, 25]
    for config in (SamplingConfig(), SamplingConfig(do_sample=False, constrain_audio=False, repetition_guard=False)):
        fast = generate(model, prompts, caps, config, list(range(5)))
        plain = generate(model, prompts, caps, config, list(range(5)), fast=False)
        assert fast[0].path.startswith("cuda-graph+triton")
        assert [o.tokens for o in fast] == [o.tokens for o in plain]
    assert all(o.stop_reason in (StopReason.CAP, StopReason.EOS) for o in fast)
    single = generate(model, prompts[:1], caps[:1], SamplingConfig(), [0])  # batch 1: the gemv kernels
    assert single[0].tokens == generate(model, prompts[:1], caps[:1], SamplingConfig(), [0], fast=False)[0].tokens


def _interleaved(m: QuantMatrix) -> QuantMatrix:
    return QuantMatrix(interleaved.interleave(m.packed, m.scheme), m.scale, m.scheme, True)


@pytest.mark.parametrize("bits", [4, 8])
def test_interleaved_dequantize_kernel_is_bitwise_the_reference(bits):
    m = _matrix(3584, 3072, bits, 1)
    il = _interleaved(m)
    assert torch.equal(il.dequantized(), dequantize(m.packed, m.scale, m.scheme))
    assert torch.equal(il.stored_words(), m.packed)


IL_KERNELS = [LinearChoice("dot", c, f) for c in interleaved.DOT_CONFIGS for f in (True, False)] + \
    [LinearChoice("gemv", c, f) for c in interleaved.GEMV_CONFIGS for f in (True, False)] + \
    [LinearChoice("operand_dot", c, f) for c in operand_dot.CONFIGS for f in (True, False)]  # as the session runs it


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("choice", IL_KERNELS, ids=str)
@pytest.mark.parametrize("rows", [1, 16])
def test_interleaved_kernels_match_dequantize_then_matmul(choice, rows, bits):
    if choice.kernel == "gemv" and rows != 1:
        pytest.skip("gemv runs one row")
    qkv, down = _interleaved(_matrix(QKV_ROWS, HIDDEN, bits, 7)), _interleaved(_matrix(HIDDEN, INNER, bits, 8))
    _check_layer_roles(qkv, down, choice, rows)


@pytest.mark.parity
def test_decode_session_interleaves_once_and_state_dict_keeps_the_stored_words(parity):
    model = load_step1(parity.editx_dir, device="cuda", dtype="bf16", quantize="int4")
    before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("weight_packed")}
    get_decode_session(model, DecodeOptions(linear="triton"))
    modules = [m for m in model.modules() if isinstance(m, QuantLinear)]
    # every matrix whose rows the kernels can block (the parity model's 24-word down rows cannot)
    assert any(m.interleaved for m in modules)
    assert all(m.interleaved == interleaved.fits(m.weight_packed) for m in modules)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(not torch.equal(m.weight_packed, before[n + ".weight_packed"])
               for n, m in model.named_modules() if isinstance(m, QuantLinear))


def _tinygemm_laid(m: QuantMatrix) -> QuantMatrix:
    packed = m.packed.clone()
    return QuantMatrix(packed, m.scale, m.scheme, scales_zeros=tinygemm.convert_(packed, m.scale, m.scheme))


needs_tinygemm = pytest.mark.skipif(not triton_decode.available() or torch.cuda.get_device_capability() < (8, 0),
                                    reason="tinygemm needs an Ampere or newer GPU")


@needs_tinygemm
@pytest.mark.parametrize("shape", [(3584, 3072), (3072, 8192)])
def test_tinygemm_layout_keeps_the_stored_words_and_computes_the_dequantized_matmul(shape):
    m = _matrix(*shape, 4, 3)
    laid = _tinygemm_laid(m)
    assert not torch.equal(laid.packed, m.packed)
    assert torch.equal(laid.stored_words(), m.packed)
    reference = dequantize(m.packed, m.scale, m.scheme)
    assert torch.equal(laid.dequantized(), reference)
    for rows in (1, 16):
        x = _rand(rows, shape[1], seed=rows)
        assert _rel(laid.linear(x), x.float() @ reference.float().T) < 5e-3
    if shape[1] == 3072:  # as the decode step runs it: RMSNorm kernel, then tinygemm
        norm = 1 + 0.1 * _rand(3072, seed=10)
        resid = _rand(1, 3072, seed=9)
        stream = ResidualStream(resid.clone(), 1e-5, use_triton=True)
        want = ref_ops.rms_norm(resid, norm, 1e-5).float() @ reference.float().T
        assert _rel(stream.normed_linear(norm, laid, TINYGEMM), want) < 5e-3


@needs_tinygemm
def test_session_lays_int4_out_for_tinygemm_and_moving_the_model_restores_the_stored_words():
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import fuse_step1_projections
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Step1ForCausalLM(Step1Config(num_hidden_layers=2, vocab_size=512)).to(torch.bfloat16).eval()
    quantize_step1_(model, 4)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("weight_packed")}
    q = model.model.layers[0].self_attn.q_proj
    x = _rand(1, 3072, seed=1)
    want = x.float() @ q.dequantized().float().T
    weights = fuse_step1_projections(model)
    assert all(w.scales_zeros is not None for w in (*weights.qkv, *weights.o, *weights.down))
    assert all(w.interleaved and w.scales_zeros is None for w in weights.gate_up)
    attn = model.model.layers[0].self_attn
    fused = weights.qkv[0].linear(x)  # q, k and v each multiply only their own row tiles, as the fused matmul does
    assert torch.equal(torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=-1), fused)
    own = attn.k_proj.own_scales_zeros
    assert own is not None and own.shape[1] == attn.k_proj.out_features
    down = model.model.layers[0].mlp.down_proj
    xd = _rand(20, 8192, seed=2)  # prefill-sized: tinygemm as well
    assert down.source is not None and _rel(down(xd), xd.float() @ down.dequantized().float().T) < 5e-3
    assert _rel(q(x), want) < 5e-3
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    model.to("cpu")
    assert down.source is None and attn.k_proj.source is None and attn.k_proj.own_scales_zeros is None
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear) and not module.interleaved:
            assert torch.equal(module.weight_packed, before[name + ".weight_packed"].cpu())
