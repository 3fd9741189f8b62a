"""Front-end encoders parked in host memory between uses (``EngineConfig.offload_frontend``): the module's
tensors move for the block and come back to the very same host tensors; an unknown choice is refused."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.engine import EngineConfig
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.offload import ParkedModules


def test_parked_modules_are_resident_only_inside_the_block():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    x = torch.randn(2, 4)
    module.eval()
    want = module(x)
    parked = ParkedModules([module])
    host = {k: v for k, v in parked.host[0].items()}
    assert torch.equal(module(x), want)  # parked on the host: still usable on the CPU
    with parked.resident(torch.device("meta")):
        assert all(p.is_meta for p in module.parameters()) and module[1].running_mean.is_meta
    assert module[0].weight.data_ptr() == host["0.weight"].data_ptr()
    assert module[1].running_var.data_ptr() == host["1.running_var"].data_ptr()
    assert torch.equal(module(x), want)
    with parked.resident(torch.device("cpu")):  # nothing moves for a CPU device
        assert module[0].weight.data_ptr() == host["0.weight"].data_ptr()


def test_offload_frontend_choice_is_checked():
    assert EngineConfig().offload_frontend == "auto"
    with pytest.raises(ValueError, match="offload_frontend"):
        EngineConfig(offload_frontend="sometimes")


def test_auto_parks_only_beside_a_local_quantized_lm_on_a_gpu():
    from comfyui_step_audio_editx.engines.step_audio_editx.frontend.offload import offload_wanted
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import QuantLinear, QuantScheme

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    dense = torch.nn.Sequential(torch.nn.Linear(128, 8))
    quantized = torch.nn.Sequential(QuantLinear.from_linear(torch.nn.Linear(128, 8), QuantScheme(4)))
    assert offload_wanted("auto", cuda, quantized)
    assert not offload_wanted("auto", cuda, dense)
    assert not offload_wanted("auto", cuda, None)  # the LM runs on a server: memory is not short here
    assert offload_wanted("on", cuda, dense) and not offload_wanted("off", cuda, quantized)
    assert not offload_wanted("on", cpu, quantized)  # nothing to park off a GPU
