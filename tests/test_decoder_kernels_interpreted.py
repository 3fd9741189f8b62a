"""The decoder's Triton kernels (``decoder/fused_norms``, ``decoder/snake``, the probe of
``decoder/triton_support``) run by Triton's CPU interpreter against the eager ops, so CI checks their index
arithmetic without a GPU: a conv's output view read in place (rows contiguous per clip, clips further apart),
the per-channel biases, Snake's channel of each element, and the probe's success path. The interpreter is
chosen when kernels are decorated, so it runs in a child process (this file, run as a script). Not covered
here: the Mish (the interpreter has no libdevice tanh / log1p) and bf16 rounding; the GPU tests
(``test_decoder_fused_norms_cuda.py``, ``test_decoder_snake_cuda.py``) hold those to the eager ops bit for bit."""

from __future__ import annotations

import sys

CHECKS = ("norm_view_bias", "modulated_norm", "gated_add_view_bias", "snake", "probe")
TOLERANCE = 1e-5  # float32: the norm's sums and numpy's sine against torch's


def _check(name: str) -> bool:
    import torch
    import torch.nn.functional as F
    from comfyui_step_audio_editx.engines.step_audio_editx.decoder import fused_norms, snake, triton_support

    gen = torch.Generator().manual_seed(0)
    width, frames = 48, 19
    full = torch.randn(3, frames + 2, width, generator=gen)
    view = full[:, :frames]  # the conv's output view: entries (frames + 2) rows apart
    weight, bias, pre = (torch.randn(width, generator=gen) for _ in range(3))
    x = torch.randn(3, frames, width, generator=gen)
    if name == "norm_view_bias":
        got = fused_norms._norm(view, 1e-5, weight=weight, bias=bias, pre_bias=pre)
        return float((got - F.layer_norm(view + pre, (width,), weight, bias, 1e-5)).abs().max()) < TOLERANCE
    if name == "modulated_norm":
        shift, scale = torch.randn(width, generator=gen), 0.1 * torch.randn(width, generator=gen)
        got = fused_norms._norm(x, 1e-6, shift=shift, scale=scale)
        want = F.layer_norm(x, (width,), eps=1e-6) * (1 + scale) + shift
        return float((got - want).abs().max()) < TOLERANCE
    if name == "gated_add_view_bias":
        gate, out, n = torch.randn(width, generator=gen), torch.empty_like(x), x.numel()
        fused_norms._gated_add_kernel[(triton_support.triton.cdiv(n, 256),)](
            x, view, gate, pre, out, n, width, frames * width, view.stride(0), Y_BIAS=True, BLOCK=256)
        return torch.equal(out, x + gate * (view + pre))
    if name == "snake":
        wave, alpha = torch.randn(2, 5, 77, generator=gen) * 4, 0.5 + torch.rand(5, generator=gen)
        inv, out = 1.0 / (alpha + snake.SNAKE_EPS), torch.empty_like(wave)
        snake._snake_kernel[(triton_support.triton.cdiv(wave.numel(), 128),)](
            wave, alpha, inv, out, wave.numel(), wave.shape[2], wave.shape[1], BLOCK=128)
        want = wave + inv[None, :, None] * torch.sin(wave * alpha[None, :, None]).pow(2)
        return float((out - want).abs().max()) < TOLERANCE
    return triton_support._probe(torch.device("cpu"))  # "probe": the interpreter runs it on the CPU


def test_interpreted_decoder_kernels_equal_the_eager_ops():
    from interpreted import run_interpreted_checks  # a test helper: not importable in the child process

    run_interpreted_checks(__file__, CHECKS)


if __name__ == "__main__":
    for check_name in sys.argv[1:]:
        print(f"{check_name}:{'ok' if _check(check_name) else 'differs'}")
