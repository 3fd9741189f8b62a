"""Every Triton kernel of the decode path (and the flow decoder's fused norms, the vocoder's Snake) compiles to
GPU machine code, here, without a GPU: Triton builds a cubin for a named target (its bundled ptxas), so CI
catches a kernel that no longer compiles (a name that does not resolve after a move, a type error in a shared
helper) before anyone holds a GPU. Targets: sm_90 (the H100 / H200 the numbers are measured on, programmatic
dependent launch on) and sm_80 (Ampere: the README's claim that nothing in the kernels is Hopper-only; no PDL
there). Numerics are tested on the GPU (``*_cuda.py``) and, for the sampler, in Triton's interpreter."""

from __future__ import annotations

import re
from collections import Counter

import pytest

triton = pytest.importorskip("triton", reason="needs Triton (it compiles the kernels for a named GPU target)")

from comfyui_step_audio_editx.engines.step_audio_editx.decoder import fused_norms, snake, triton_support  # noqa: E402
from comfyui_step_audio_editx.engines.step_audio_editx.lm import (  # noqa: E402
    persistent_layer,
    triton_attention,
    triton_decode,
    triton_sampler,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import (  # noqa: E402
    group_gemv, interleaved, kernels, operand_dot, splitk)

# The pointer arguments' element types by name (every other argument is an int32 or a float32 scalar).
POINTERS = {
    "x_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16", "norm_ptr": "*bf16", "resid_ptr": "*bf16",
    "delta_ptr": "*bf16", "weight_ptr": "*bf16", "gu_ptr": "*bf16", "qkv_ptr": "*bf16", "k_ptr": "*bf16",
    "v_ptr": "*bf16", "p_ptr": "*i32", "s_ptr": "*bf16", "kv_len_ptr": "*i32", "slopes_ptr": "*fp32",
    "part_o_ptr": "*fp32", "part_ml_ptr": "*fp32", "counter_ptr": "*i32", "logits_ptr": "*fp32",
    "work_ptr": "*fp32", "kth_ptr": "*fp32", "ids_ptr": "*i64", "hashed_ptr": "*i64", "masks_ptr": "*i1",
    "seeds_ptr": "*i64", "tokens_ptr": "*i64", "pos_ptr": "*i64", "n_gen_ptr": "*i64", "caps_ptr": "*i64",
    "active_ptr": "*i1", "hist_ptr": "*i64", "rows_ptr": "*i64", "b_ptr": "*bf16", "shift_ptr": "*bf16",
    "scale_ptr": "*bf16", "y_ptr": "*bf16", "gate_ptr": "*bf16", "pre_ptr": "*bf16", "bias_ptr": "*bf16",
    "alpha_ptr": "*bf16", "inv_ptr": "*bf16", "part_ptr": "*fp32",
}
FLOATS = ("eps", "scale", "inv_temperature")
SAMPLER_OUT = {"out_ptr": "*i64"}  # the sampler's out_ptr holds token ids
ATTENTION = dict(HEADS=48, GROUPS=4, DIM=64, DIM_PAD=64, QH=12, QH_PAD=16, CHUNK=128, MERGE_AHEAD=True)
MATMUL = dict(PROLOGUE=1, RESIDUAL=True)
QUANT = dict(BITS=4, GROUP=128, **MATMUL)
PERSISTENT = dict(HEADS=48, GROUPS=4, DIM=64, DIM_PAD=64, QH=12, QH_PAD=16, CHUNK=128, BLOCK_N_ATTN=64,
                  PRECISION="tf32", MERGE_AHEAD=True, DOT=False, BLOCK_M=16, QKV_BN=8, QKV_BK=512, QKV_EVEN=True,
                  O_BN=4, O_BK=1024, O_EVEN=False, GU_BN=8, GU_BK=512, GU_EVEN=True, DOWN_BN=8, DOWN_BK=512,
                  DOWN_EVEN=True, FIRST=0, LAST=4, BARRIER=True)
PERSISTENT_POINTERS = {name: "*bf16" for name in ("attn_ptr", "w_qkv_ptr", "w_o_ptr", "w_gu_ptr", "w_down_ptr",
                                                  "norm1_ptr", "norm2_ptr")} | {"bar_ptr": "*i64"}
DIT_NORM = dict(AFFINE=False, MODULATE=False, PRE_BIAS=False, MISH=False, BLOCK_ROWS=16, BLOCK_W=512)

# (kernel, its constexprs but PDL; takes PDL, pointer overrides)
CASES = {
    "add_rms_norm": (triton_decode._add_rms_norm_kernel, dict(HAS_DELTA=True, BLOCK=4096), True, {}),
    "silu_mul": (triton_decode._silu_mul_kernel, dict(BLOCK=1024), True, {}),
    "attention_split": (triton_attention._attn_split_kernel,
                        dict(ATTENTION, BLOCK_N=64, PRECISION="tf32", FUSED_MERGE=True, DIM_LINES=1, LINE=64),
                        True, {}),
    "attention_split_before": (triton_attention._attn_split_kernel,  # the path before the merge look-ahead
                               dict(ATTENTION, MERGE_AHEAD=False, BLOCK_N=64, PRECISION="tf32", FUSED_MERGE=True,
                                    DIM_LINES=1, LINE=64), True, {}),
    "attention_merge": (triton_attention._attn_merge_kernel, ATTENTION, False, {}),
    "gemv": (triton_decode._gemv_kernel, dict(MATMUL, BLOCK_N=8, BLOCK_K=512, EVEN=True, LINE=64), True, {}),
    "persistent_layer": (persistent_layer._layer_kernel, PERSISTENT, False, PERSISTENT_POINTERS),
    "persistent_layer_rows": (persistent_layer._layer_kernel, dict(PERSISTENT, DOT=True, QKV_BN=32, QKV_BK=256),
                              False, PERSISTENT_POINTERS),
    "skinny_linear": (triton_decode._skinny_linear_kernel,
                      dict(MATMUL, BLOCK_M=16, BLOCK_N=32, BLOCK_K=256, EVEN=False, PRECISION="tf32", LINE=64),
                      True, {}),
    "sample_tile": (triton_sampler._sample_tile_kernel,
                    dict(GUARD=True, CONSTRAIN=True, GREEDY=False, HAS_IDS=True, HAS_TOPK=True, WINDOW=10,
                         WINDOW_PAD=16, GROUP=5, EOT=3, BLOCK=8192, KTH_STEPS=32), True, SAMPLER_OUT),
    "prepare_logits": (triton_sampler._prepare_logits_kernel,
                       dict(GUARD=True, CONSTRAIN=True, HAS_IDS=True, WINDOW=10, WINDOW_PAD=16, GROUP=5, EOT=3,
                            BLOCK=2048), True, SAMPLER_OUT),
    "argmax_commit": (triton_sampler._argmax_commit_kernel,
                      dict(HAS_KTH=True, NOISE=True, HAS_IDS=True, WINDOW=10, WINDOW_PAD=16, EOT=3, BLOCK=2048),
                      True, SAMPLER_OUT),
    "int4_dequantize": (kernels._dequant_kernel, dict(BITS=4, GROUP=128, BLOCK_N=32, BLOCK_K=256), False, {}),
    "int4_gemv": (kernels._qgemv_kernel, dict(QUANT, BLOCK_N=8, BLOCK_K=512), False, {}),
    "int4_dot": (kernels._qdot_kernel, dict(QUANT, BLOCK_M=16, BLOCK_N=32, BLOCK_K=256, PRECISION="tf32"),
                 False, {}),
    "int8_dot": (kernels._qdot_kernel,
                 dict(QUANT, BITS=8, BLOCK_M=16, BLOCK_N=32, BLOCK_K=256, PRECISION="tf32"), False, {}),
    "interleaved_dequantize": (interleaved._il_dequant_kernel, dict(BITS=4, GROUP=128, BLOCK_N=32, BLOCK_W=64),
                               False, {}),
    "interleaved_gemv": (interleaved._il_gemv_kernel, dict(QUANT, BLOCK_N=16, BLOCK_W=64, AHEAD=0, X2D=False),
                         False, {}),
    "interleaved_gemv_ahead": (interleaved._il_gemv_kernel,
                               dict(QUANT, BITS=8, BLOCK_N=16, BLOCK_W=128, AHEAD=1, X2D=False), False, {}),
    "interleaved_gemv_x2d": (interleaved._il_gemv_kernel, dict(QUANT, BLOCK_N=16, BLOCK_W=128, AHEAD=1, X2D=True),
                             False, {}),
    "interleaved_dot": (interleaved._il_dot_kernel,
                        dict(QUANT, BLOCK_M=16, BLOCK_N=32, BLOCK_W=32, PRECISION="tf32"), False, {}),
    "int4_group_gemv": (group_gemv._group_gemv_kernel,
                        dict(QUANT, BLOCK_N=64, GROUPS_T=8, AHEAD=True, EVEN=True, POS=12, PER_COPY=2, PIPELINE=1),
                        False, {}),
    "int8_group_gemv": (group_gemv._group_gemv_kernel,
                        dict(QUANT, BITS=8, PROLOGUE=2, BLOCK_N=32, GROUPS_T=4, AHEAD=False, EVEN=False, POS=8,
                             PER_COPY=1, PIPELINE=3), False, {}),
    "int4_splitk": (splitk._splitk_kernel, dict(QUANT, BLOCK_M=16, BLOCK_N=64, BLOCK_W=32, SPLIT=4, PRECISION="tf32",
                                                MODE=splitk.TILE_AHEAD), False, {}),
    "int4_splitk_gather": (splitk._splitk_kernel, dict(QUANT, PROLOGUE=2, BLOCK_M=16, BLOCK_N=32, BLOCK_W=16, SPLIT=4,
                                                       PRECISION="tf32", MODE=splitk.GATHER), False, {}),
    "int4_splitk_cuda_cores": (splitk._splitk_kernel, dict(QUANT, PROLOGUE=0, BLOCK_M=8, BLOCK_N=16, BLOCK_W=32,
                                                           SPLIT=4, PRECISION="tf32", MODE=splitk.CUDA_CORES), False, {}),
    "int4_operand_dot": (operand_dot._operand_dot_kernel,
                         dict(QUANT, PROLOGUE=1, RESIDUAL=False, BLOCK_M=16, BLOCK_N=64, GROUPS_T=2, STAGES=4, SPLIT=1,
                              PRECISION="tf32", ASM=True), False, {"b_ptr": "*i8"}),
    "int8_operand_dot": (operand_dot._operand_dot_kernel,
                         dict(QUANT, BITS=8, PROLOGUE=2, BLOCK_M=16, BLOCK_N=32, GROUPS_T=4, STAGES=3, SPLIT=2,
                              PRECISION="tf32", ASM=True), False, {"b_ptr": "*i8"}),
    "dit_modulated_norm": (fused_norms._norm_kernel, dict(DIT_NORM, MODULATE=True), False, {}),
    "dit_head_norm": (fused_norms._norm_kernel, dict(DIT_NORM, AFFINE=True, BLOCK_ROWS=128, BLOCK_W=64), False, {}),
    "dit_conv_norm_mish": (fused_norms._norm_kernel, dict(DIT_NORM, AFFINE=True, PRE_BIAS=True, MISH=True),
                           False, {}),
    "dit_gated_add": (fused_norms._gated_add_kernel, dict(Y_BIAS=False, BLOCK=2048), False, {}),
    "dit_gated_add_bias": (fused_norms._gated_add_kernel, dict(Y_BIAS=True, BLOCK=2048), False, {}),
    "decoder_probe": (triton_support._probe_kernel, dict(BLOCK=64), False, {"x_ptr": "*fp16", "out_ptr": "*fp16"}),
    "hift_snake": (snake._snake_kernel, dict(BLOCK=1024), False,
                   {"x_ptr": "*fp32", "alpha_ptr": "*fp32", "inv_ptr": "*fp32", "out_ptr": "*fp32"}),
}
TARGETS = {"sm_90": 90, "sm_80": 80}


def _signature(fn, pointers: dict[str, str]) -> dict[str, str]:
    signature = {}
    for param in fn.params:
        if param.is_constexpr:
            signature[param.name] = "constexpr"
        elif param.name.endswith("_ptr"):
            signature[param.name] = pointers.get(param.name) or POINTERS[param.name]
        else:
            signature[param.name] = "fp32" if param.name in FLOATS else "i32"
    return signature


def _compile(fn, constexprs, pointers, capability, aligned: bool = False, divisible: tuple[str, ...] = (),
             **options):
    """Machine code of ``fn`` for sm_``capability``; ``aligned``: with the alignment the runtime sees for a
    full-size model (16-byte pointers, strides and sizes), which decides whether loads can be vectorised and
    copied asynchronously; ``divisible``: more integer arguments the launcher sees as multiples of 16."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = _signature(fn, pointers)
    multiples = ("N", "K", "stride_x", "stride_b", "stride_out", *divisible)
    attrs = {(i,): [["tt.divisibility", 16]] for i, arg in enumerate(signature)
             if arg.endswith("_ptr") or arg in multiples} if aligned else None
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", capability, 32), options=options)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", CASES)
def test_kernel_compiles_for_the_gpu(name, target):
    fn, constexprs, takes_pdl, pointers = CASES[name]
    capability = TARGETS[target]
    if takes_pdl:  # PDL needs sm_90's grid dependency control: compiled in where the decode session uses it
        constexprs = {**constexprs, "PDL": capability >= 90}
    compiled = _compile(fn, constexprs, pointers, capability)
    assert compiled.asm["cubin"], f"{name}: no machine code for {target}"
    assert f".target {target}" in compiled.asm["ptx"]
    if takes_pdl and capability >= 90:
        assert "griddepcontrol" in compiled.asm["ptx"], f"{name}: PDL requested but not compiled in"


@pytest.mark.parametrize("target", TARGETS)
def test_group_gemv_loop_is_pipelined_only_when_its_config_asks(target):
    """A loop without a dot is software-pipelined by Triton only when the loop itself carries stages
    (``tl.range(num_stages=...)``); the kernel-wide ``num_stages`` alone leaves it unpipelined. The int8 GEMV's
    best configurations rely on it (cp.async copies in flight), and stages 1 must stay the plain loop."""
    fn, constexprs, _, pointers = CASES["int8_group_gemv"]
    copies = {}
    for stages in (1, 3):
        ptx = _compile(fn, {**constexprs, "PIPELINE": stages}, pointers, TARGETS[target], num_stages=3).asm["ptx"]
        copies[stages] = ptx.count("cp.async.cg") + ptx.count("cp.async.ca")
    assert copies[1] == 0 and copies[3] > 0, copies


ADA_SHARED_BYTES = 99 * 1024  # shared memory per block of Ampere / Ada consumer cards (sm_86 / sm_89)
WARP_THREADS = 32


def _bytes_reach_the_operand_layout(compiled) -> bool:
    """The stored bytes come from shared memory straight into the tensor-core operand layout (an i8
    ``local_load`` to a ``dot_op`` layout) and no dequantized bf16 tile is written to shared memory."""
    import re

    ttgir = compiled.asm["ttgir"]
    return (re.search(r"ttg\.local_load [^\n]*-> tensor<\d+x\d+xi8, #ttg\.dot_op<\{opIdx = 1", ttgir) is not None
            and re.search(r"local_alloc %[^\n]*: \(tensor<\d+x\d+xbf16", ttgir) is None)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", ["int4_operand_dot", "int8_operand_dot"])
def test_operand_dot_streams_bytes_into_the_mma_operand_layout(name, target):
    """The point of ``quant.operand_dot``: the stored bytes reach shared memory by pipelined ``cp.async`` copies
    and are loaded from there straight into the operand layout, where the packed conversion runs."""
    fn, constexprs, _, pointers = CASES[name]
    compiled = _compile(fn, constexprs, pointers, TARGETS[target], aligned=True)
    ptx = compiled.asm["ptx"]
    assert _bytes_reach_the_operand_layout(compiled), "dequantized weights go through shared memory"
    assert ptx.count("cp.async") > 0 and "prmt.b32" in ptx and "fma.rn.bf16x2" in ptx


@pytest.mark.parametrize("bits", [4, 8])
def test_every_operand_dot_configuration_keeps_the_operand_layout_and_fits_ada(bits):
    """Each timed configuration, with its largest prologue (the norm's weights beside x): the bytes still reach
    the operand layout on sm_90 (which needs a scale tile of at least one element per thread), and shared
    memory fits an sm_89 block."""
    fn, constexprs, _, pointers = CASES["int4_operand_dot"]
    for block_n, groups_t, warps, stages, split in operand_dot.CONFIGS:
        assert groups_t * block_n >= WARP_THREADS * warps, (block_n, groups_t, warps)
        config = dict(constexprs, BITS=bits, PROLOGUE=1, BLOCK_N=block_n, GROUPS_T=groups_t, STAGES=stages,
                      SPLIT=split)
        assert _bytes_reach_the_operand_layout(_compile(fn, config, pointers, 90, aligned=True, num_warps=warps)), \
            (block_n, groups_t, warps, stages, split)
        assert _compile(fn, config, pointers, 89, aligned=True, num_warps=warps).metadata.shared <= ADA_SHARED_BYTES


@pytest.mark.parametrize("target", TARGETS)
def test_persistent_layer_kernel_meets_between_phases_and_only_there(target):
    """Four grid barriers per layer (one per phase boundary), each a release by one thread, relaxed polls by
    that thread (the first look and the loop's) and one acquire once the count is reached, on the int64 ticket
    counter; the phase-by-phase build (the interpreter's) has none."""
    fn, constexprs, _, pointers = CASES["persistent_layer"]
    ptx = _compile(fn, constexprs, pointers, TARGETS[target]).asm["ptx"]
    barriers = persistent_layer.PHASES - 1
    assert ptx.count("atom.global.gpu.release.add.u64") == barriers
    assert ptx.count("ld.global.gpu.relaxed.b64") == 2 * barriers
    assert ptx.count("ld.global.gpu.acquire.b64") == barriers
    phased = _compile(fn, {**constexprs, "FIRST": 2, "LAST": 2, "BARRIER": False}, pointers, TARGETS[target])
    assert "gpu.release" not in phased.asm["ptx"] and "gpu.acquire" not in phased.asm["ptx"]


def _summation_order(compiled) -> Counter:
    """What fixes the order in which a kernel sums: every reduction's input type and every dot's operand types
    (layouts spelled out), and how many of each floating-point instruction it runs (fused multiply-adds
    against separate products and sums). int -> float conversions are left out: the fused kernel shares
    one for the sizes two phases divide by."""
    ttgir = compiled.asm["ttgir"]
    layouts = dict(re.findall(r"^(#\w+) = (#ttg\.\w+<.*>)$", ttgir, re.M))

    def spelled(text: str) -> str:
        return re.sub(r"#\w+", lambda m: layouts.get(m.group(0), m.group(0)), text)

    found = Counter(spelled(m.group(1)) for m in re.finditer(r"\}\) : \((tensor<[^)]*>)\) -> ", ttgir))
    found.update(spelled(line.split("loc(")[0].split(":", 1)[1]) for line in ttgir.splitlines() if "tt.dot " in line)
    for line in compiled.asm["ptx"].splitlines():
        op = re.match(r"\s*(?:@%p\d+ )?((?:fma|mul|add|sub|div|ex2|lg2|sqrt|rsqrt|max|min|cvt|mma|rcp)[\w.]*)", line)
        name = op.group(1) if op else ""
        if (".f32" in name or ".bf16" in name or "mma" in name) and ".s32" not in name:
            found[name] += 1
    return found


@pytest.mark.parametrize("rows, blocks", [(1, ((8, 512),) * 4), (1, ((8, 512), (4, 1024), (4, 1024), (8, 512))),
                                          (16, ((32, 256),) * 4), (8, ((64, 128), (32, 256), (16, 512), (64, 128)))])
def test_persistent_layer_sums_in_the_order_of_the_standalone_kernels(rows, blocks):
    """Same tile code is not enough for the same bits: the compiler lays each tile out from the alignment it can
    prove, and contracts products into FMAs as the code around them allows. Compiled with the divisibility the
    launchers see for Step1 (sizes and strides are multiples of 16), the persistent kernel's reductions and dots
    have exactly the layouts of the standalone GEMV / tensor-core and attention kernels with the same
    configurations, and it runs the same floating-point instructions (sm_90)."""
    sizes = ("hidden", "qkv_rows", "attn_width", "gu_width", "inner", "stride_qkv_w", "stride_o_w", "stride_gu_w",
             "stride_down_w", "stride_kb", "stride_kg", "stride_kl", "stride_qkv", "stride_w", "stride_x")
    phases = dict(PERSISTENT, DOT=rows > 1)
    for name, (block_n, block_k) in zip(("QKV", "O", "GU", "DOWN"), blocks):
        phases.update({f"{name}_BN": block_n, f"{name}_BK": block_k, f"{name}_EVEN": True})
    fn, constexprs, _, pointers = CASES["persistent_layer"]
    fused = _summation_order(_compile(fn, phases, pointers, 90, aligned=True, divisible=sizes,
                                      **persistent_layer.LAUNCH_OPTIONS))
    want = Counter()
    matmul, matmul_constexprs, _, matmul_pointers = CASES["gemv" if rows == 1 else "skinny_linear"]
    for (block_n, block_k), prologue, residual in zip(blocks, (1, 0, 1, 2), (False, True, False, True)):
        want += _summation_order(_compile(matmul, {**matmul_constexprs, "PROLOGUE": prologue, "RESIDUAL": residual,
                                                   "PDL": False, "BLOCK_N": block_n, "BLOCK_K": block_k,
                                                   "EVEN": True}, matmul_pointers, 90, aligned=True,
                                          divisible=sizes))
    attention, attention_constexprs, _, attention_pointers = CASES["attention_split"]
    want += _summation_order(_compile(attention, {**attention_constexprs, "PDL": False}, attention_pointers, 90,
                                      aligned=True, divisible=sizes))
    assert fused == want
