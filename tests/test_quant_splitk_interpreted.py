"""The split-K int4 / int8 kernel (``quant.splitk``) in Triton's CPU interpreter against dequantize-then-matmul,
so CI checks its index arithmetic without a GPU: the columns a word tile's fields hold in the interleaved
layout (both ways of reading it), each split's slice of the row, the partial sums added by the last program
of a block, the norm / SwiGLU prologues and the residual add, and that every call leaves its counters at
zero. Float32 throughout (the interpreter truncates bf16 casts; ``test_quant_splitk_cuda.py`` covers bf16 on
the GPU). Runs in a child process: the interpreter is chosen when kernels are decorated."""

from __future__ import annotations

import sys

from interpreted import interleaved_matrix, report_checks, role_pairs, run_interpreted_checks, worst_error

CHECKS = ("int4", "int8")
TOLERANCE = 1e-5  # float32 summation order only
# (BLOCK_N, BLOCK_W, warps, stages, SPLIT[, GATHER]) for int4; int8 takes twice the words per step
CASES = ((32, 16, 4, 1, 1), (16, 32, 4, 1, 2), (64, 16, 4, 1, 4), (32, 16, 4, 1, 4, 1), (16, 16, 4, 1, 1, 1),
         (16, 32, 4, 1, 1, 2), (32, 16, 4, 1, 4, 2))  # the last two: CUDA cores, no prologue


def _check(name: str) -> bool:
    from functools import partial

    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import splitk
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme

    torch.manual_seed(0)
    bits = int(name[3:])
    scheme = QuantScheme(bits)
    n, k = 80, 512  # 80 rows: the last block of 32 / 64 is partly past N
    laid, scale, w = interleaved_matrix(scheme, n, k)
    norm = 1 + 0.1 * torch.randn(k)
    worst = 0.0
    for rows in (1, 5, 8):
        x, gu, r = torch.randn(rows, k), torch.randn(rows, 2 * k), torch.randn(rows, n)
        for case in CASES:
            config = case if bits == 4 else (case[0], case[1] * 2, *case[2:])
            assert splitk.fits(laid.shape[1], scheme, config)
            run = partial(splitk.splitk_dot, packed=laid, scale=scale, scheme=scheme, config=config)
            worst = worst_error(role_pairs(run, x, gu, r, norm, w, prologues=config[5:] != (splitk.CUDA_CORES,)),
                                worst)
    counters_clear = all(int(c.abs().sum()) == 0 for _, c in splitk._WORKSPACES[torch.device("cpu")])
    return worst < TOLERANCE and counters_clear


def test_splitk_kernel_in_the_interpreter():
    run_interpreted_checks(__file__, CHECKS)


if __name__ == "__main__":
    report_checks(_check, sys.argv[1:])
