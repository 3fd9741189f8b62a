"""The operand-layout int4 / int8 kernel (``quant.operand_dot``) in Triton's CPU interpreter against
dequantize-then-matmul, so CI checks its index arithmetic without a GPU: which x columns each stored byte (and
nibble) meets after the permutation, the scales broadcast over a group's bytes and loaded one k-step ahead,
each split's slice of the groups and the partial sums, the norm / SwiGLU prologues and the residual add. The
interpreter runs the integer-op path (float32 scales); the packed-instruction path of bf16 scales is checked
instruction by instruction below and on the GPU (``test_quant_operand_dot_cuda.py``). Runs in a child process:
the interpreter is chosen when kernels are decorated."""

from __future__ import annotations

import re
import sys

import pytest

from interpreted import interleaved_matrix, report_checks, role_pairs, run_interpreted_checks, worst_error

CHECKS = ("int4", "int4_group16", "int8")
TOLERANCE = 1e-5  # float32: the weights are dequantize's exactly, only the summation order differs
# (BLOCK_N, GROUPS_T, warps, stages, SPLIT): rows past N (80 rows), one and several groups per k-step, splits
CASES = ((32, 1, 4, 1, 1), (16, 2, 4, 3, 2), (64, 2, 4, 1, 4), (16, 4, 2, 1, 1))


def _check(name: str) -> bool:
    from functools import partial

    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import operand_dot, splitk
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme

    torch.manual_seed(0)
    scheme = QuantScheme(int(name[3]), 16 if name.endswith("group16") else 128)
    n, k = 80, 1024
    laid, scale, w = interleaved_matrix(scheme, n, k)
    norm = 1 + 0.1 * torch.randn(k)
    worst = 0.0
    for rows in (1, 5, 16):
        x, gu, r = torch.randn(rows, k), torch.randn(rows, 2 * k), torch.randn(rows, n)
        for config in CASES:
            if not operand_dot.fits(laid.shape[1], scheme, config):
                continue
            run = partial(operand_dot.operand_dot, packed=laid, scale=scale, scheme=scheme, config=config)
            pairs = role_pairs(run, x, gu, r, norm, w) + [(run(gu, swiglu=True), ref.silu_mul(gu) @ w.T)]
            worst = worst_error(pairs, worst)
    counters_clear = all(int(c.abs().sum()) == 0 for _, c in splitk._WORKSPACES[torch.device("cpu")])
    print(f"{name} worst {worst:.2e}", file=sys.stderr)
    return worst < TOLERANCE and counters_clear


def test_operand_dot_kernel_in_the_interpreter():
    run_interpreted_checks(__file__, CHECKS)


def test_configurations_fit_a_full_size_model_and_refuse_what_does_not_split():
    """Every timed configuration runs the Step1 matrices (3,072 and 8,192 columns); a k-step narrower than
    tl.dot's 16 bytes, or groups that do not split evenly, are refused before any launch."""
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import operand_dot
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme

    for bits in (4, 8):
        scheme = QuantScheme(bits)
        for columns in (3072, 8192):
            assert all(operand_dot.fits(scheme.packed_cols(columns), scheme, c) for c in operand_dot.CONFIGS)
    assert not operand_dot.fits(QuantScheme(4, 16).packed_cols(256), QuantScheme(4, 16), (16, 1, 4, 1, 1))  # 8 bytes
    assert not operand_dot.fits(QuantScheme(8).packed_cols(384), QuantScheme(8), (16, 2, 4, 1, 1))  # 3 groups
    with pytest.raises(ValueError, match="do not split"):
        operand_dot.operand_dot(torch.zeros(1, 384), torch.zeros(8, 96, dtype=torch.int32), torch.ones(8, 3),
                                QuantScheme(8), (16, 2, 4, 1, 1))


# --- the packed-instruction path, emulated: every PTX instruction the conversion uses, on the CPU ----------------

def _bf16_value(bits: int) -> float:
    import struct
    return struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]


def _bf16_bits(value: float) -> int:
    """Round a float (exact in float64 here) to bf16, nearest-even, as the hardware's .rn does."""
    import torch
    return int(torch.tensor(value, dtype=torch.float64).to(torch.bfloat16).view(torch.int16)) & 0xFFFF


def _emulate(asm: str, regs: dict[str, int]) -> dict[str, int]:
    """Run the conversion's PTX (``mov``, ``xor``, ``and``, ``shr``, ``prmt``, ``fma.rn.bf16x2``) on 32-bit
    registers. Python floats hold every bf16 product and sum here exactly before the one rounding."""
    def val(token: str) -> int:
        token = token.strip()
        if token[0].isdigit():
            return int(token, 0)
        return regs[token]

    for line in asm.splitlines():
        m = re.match(r"\s*([a-z0-9.]+)\s+(.*);", line)
        if not m or m.group(1) == ".reg":
            continue
        op, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        d, src = args[0], args[1:]
        if op == "mov.b32":
            regs[d] = val(src[0])
        elif op == "xor.b32":
            regs[d] = val(src[0]) ^ val(src[1])
        elif op == "and.b32":
            regs[d] = val(src[0]) & val(src[1])
        elif op == "shr.b32":
            regs[d] = val(src[0]) >> val(src[1])
        elif op == "prmt.b32":  # byte k of d = byte sel[k] of the 8-byte pool {b, a}
            pool = (val(src[1]) << 32) | val(src[0])
            sel = val(src[2])
            regs[d] = sum(((pool >> (8 * ((sel >> (4 * k)) & 7))) & 0xFF) << (8 * k) for k in range(4))
        elif op == "fma.rn.bf16x2":
            a, b, c = (val(t) for t in src)
            lanes = [_bf16_bits(_bf16_value(a >> s) * _bf16_value(b >> s) + _bf16_value(c >> s)) for s in (0, 16)]
            regs[d] = lanes[0] | lanes[1] << 16
        else:
            raise AssertionError(f"the emulator does not know {op}")
    return regs


@pytest.mark.parametrize("bits,high", [(8, False), (4, False), (4, True)])
def test_packed_conversion_gives_dequantize_weights_for_every_byte(bits, high):
    """The asm the GPU runs with bf16 scales, instruction by instruction: every stored byte value, with scales
    from tiny to large and negative, gives ``q.to(bf16) * scale`` bit for bit (``format.dequantize``)."""
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import operand_dot

    asm = operand_dot._INT8_ASM if bits == 8 else (operand_dot._INT4_HIGH_ASM if high else operand_dot._INT4_LOW_ASM)
    for operand, name in (("$0", "out0"), ("$1", "out1"), ("$2", "src"), ("$3", "s01"), ("$4", "s23")):
        asm = asm.replace(operand, name)
    scales = torch.tensor([1e-4, -3.7e-3, 0.0123, 1.0, -2.5, 117.0], dtype=torch.bfloat16)
    for start in range(0, 256, 4):
        src = sum((start + i) << (8 * i) for i in range(4))
        for s in scales:
            sb = int(s.view(torch.int16)) & 0xFFFF
            regs = _emulate(asm, {"src": src, "s01": sb | sb << 16, "s23": sb | sb << 16})
            got = [(regs["out0"] >> sh) & 0xFFFF for sh in (0, 16)] + [(regs["out1"] >> sh) & 0xFFFF for sh in (0, 16)]
            stored = torch.arange(start, start + 4)
            field = (stored >> 4) & 15 if high else (stored & 15 if bits == 4 else stored)
            q = field - (1 << (bits - 1))
            want = (q.to(torch.bfloat16) * s).view(torch.int16).tolist()
            assert got == [w & 0xFFFF for w in want], (bits, high, start, float(s))


if __name__ == "__main__":
    report_checks(_check, sys.argv[1:])
