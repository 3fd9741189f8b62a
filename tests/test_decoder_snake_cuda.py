"""HiFT's Snake activation: the one-pass CUDA kernel equals the eager ops bit for bit (float32 and bf16,
shapes that do not fill the last block); on the CPU ``snake`` is the eager formula itself. The CUDA cases
skip without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.decoder import snake as snake_mod
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.hift import ResBlock
from layer_cases import rand

needs_cuda = pytest.mark.skipif(snake_mod.triton is None or not torch.cuda.is_available(),
                                reason="needs CUDA and triton")


def eager_snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The official formula, op by op."""
    a = alpha[None, :, None]
    return x + (1.0 / (a + snake_mod.SNAKE_EPS)) * torch.sin(x * a).pow(2)


def test_cpu_snake_is_the_eager_formula():
    x = rand(2, 5, 301, seed=1, dtype=torch.float32, device="cpu") * 4
    alpha = 1 + 0.3 * rand(5, seed=2, dtype=torch.float32, device="cpu").abs()
    assert torch.equal(snake_mod.snake(x, alpha), eager_snake(x, alpha))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 7, 1001), (16, 64, 4096), (1, 1, 5)])
def test_cuda_snake_equals_the_eager_ops(dtype, shape):
    x = rand(*shape, seed=3, dtype=dtype) * 6  # many periods of the sine, negative values too
    alpha = (0.2 + rand(shape[1], seed=4, dtype=torch.float32).abs()).to(dtype)
    got = snake_mod.snake(x, alpha)
    want = eager_snake(x, alpha)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got, want), f"{(got != want).sum().item()} of {got.numel()} values differ"


@needs_cuda
def test_cuda_resblock_is_unchanged_by_the_kernel():
    torch.manual_seed(0)
    block = ResBlock(32, 3, (1, 3, 5)).cuda().eval()
    with torch.no_grad():
        for act in (*block.activations1, *block.activations2):
            act.alpha.uniform_(0.5, 2.0)
        x = rand(2, 32, 777, seed=5, dtype=torch.float32)
        got = block(x, None)
        for act in (*block.activations1, *block.activations2):
            act.forward = lambda t, a=act: eager_snake(t, a.alpha)
        want = block(x, None)
    assert torch.equal(got, want)
