"""The flow decoder's CUDA graph (``decoder/flow_graph``): a graphed flow call gives bit for bit the mel of the
eager steps (bf16 and float32; a padded batch of three clips of different lengths, and one clip), while the
estimator's Python code runs twice (the eager first step and the capture) instead of once per step. Skips
without CUDA."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.token2wav import Token2Wav
from decoder_cases import decoder_clips

pytestmark = [pytest.mark.parity, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
STEPS = 10


def _mels(t2w: Token2Wav, items, graph: bool) -> tuple[list[torch.Tensor], int]:
    cfm = t2w.flow.decoder
    cfm.cuda_graph = graph
    calls = []
    hook = cfm.estimator.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        gens = [torch.Generator(device="cuda").manual_seed(20 + i) for i in range(len(items))]
        mels = t2w.run_flow(t2w.prepare(items), gens, n_timesteps=STEPS)
    finally:
        hook.remove()
        cfm.cuda_graph = True
    return mels, len(calls)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_graphed_flow_equals_the_eager_steps(parity, dtype):
    t2w = Token2Wav.from_folder(parity.editx_dir / C.COSYVOICE_SUBDIR, device="cuda", dtype=dtype)
    clips = decoder_clips(parity, (300, 41, 23))
    for items in (clips, clips[:1]):
        eager, eager_calls = _mels(t2w, items, graph=False)
        graphed, graphed_calls = _mels(t2w, items, graph=True)
        assert eager_calls == STEPS and graphed_calls == 2
        assert len(graphed) == len(eager)
        for g, e in zip(graphed, eager):
            assert g.shape == e.shape and torch.equal(g, e)
