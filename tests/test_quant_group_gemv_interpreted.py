"""The group-major one-row GEMV (``quant.group_gemv``) in Triton's CPU interpreter against
dequantize-then-matmul, so CI checks its index arithmetic without a GPU: which columns each field of a copy
holds in the interleaved layout, the shifted copies and their pre-scaled x, the offsets taken off per word,
whole and partial tiles (rows past N, groups past the row), the look-ahead, the norm / SwiGLU prologues and
the residual add. Float32 throughout (the interpreter truncates bf16 casts; the GPU tests cover bf16). Runs in
a child process: the interpreter is chosen when kernels are decorated."""

from __future__ import annotations

import sys

from interpreted import interleaved_matrix, report_checks, role_pairs, run_interpreted_checks, worst_error

CHECKS = ("int4", "int4_group16", "int8")
TOLERANCE = 2e-4  # float32: summation order, and ~16 bits left beside the largest offset of a field (a wrong
# column, shift or offset is off by ~1)
# (BLOCK_N, GROUPS_T, warps, stages[, AHEAD]); int8 has twice the words per group: half the groups per tile.
# The interpreter runs a pipelined loop (stages > 1) as a plain one: the case checks its arguments reach the kernel.
CASES = ((64, 8, 8, 1, 1), (32, 4, 4, 1, 2), (16, 8, 8, 1, 0), (32, 2, 4, 1, 1), (16, 4, 2, 3, 0))
# (rows, columns, cases): rows past N and groups past the row; then every tile whole (EVEN)
SHAPES = {"int4": ((80, 512, CASES), (64, 1024, CASES[:1])), "int4_group16": ((80, 512, CASES[1:2]),),
          "int8": ((80, 512, CASES[:2] + CASES[-1:]), (64, 1024, CASES[:1]))}


def _check(name: str) -> bool:
    from functools import partial

    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import group_gemv
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme

    torch.manual_seed(0)
    scheme = QuantScheme(int(name[3]), 16 if name.endswith("group16") else 128)
    worst = 0.0
    for n, k, cases in SHAPES[name]:
        laid, scale, w = interleaved_matrix(scheme, n, k)
        norm = 1 + 0.1 * torch.randn(k)
        x, gu, r = 3 * torch.randn(1, k), torch.randn(1, 2 * k), torch.randn(1, n)
        for case in cases:
            config = case if scheme.bits == 4 else (case[0], max(1, case[1] // 2), *case[2:])
            run = partial(group_gemv.gemv, packed=laid, scale=scale, scheme=scheme, config=config)
            worst = worst_error(role_pairs(run, x, gu, r, norm, w), worst)
    print(f"{name} worst {worst:.2e}", file=sys.stderr)
    return worst < TOLERANCE


def test_group_gemv_kernel_in_the_interpreter():
    run_interpreted_checks(__file__, CHECKS)


def test_a_pipelined_config_loads_no_tiles_ahead():
    """Two ways to keep tiles in flight do not combine: the configuration is refused before any launch."""
    import pytest
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import group_gemv
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme

    with pytest.raises(ValueError, match="loads no tiles ahead"):
        group_gemv.gemv(torch.zeros(1, 256), torch.zeros(8, 32, dtype=torch.int32), torch.ones(8, 2),
                        QuantScheme(4), (16, 2, 2, 3, 1))
    assert all(c[3] == 1 or c[4] == 0 for c in group_gemv.CONFIGS)


if __name__ == "__main__":
    report_checks(_check, sys.argv[1:])
