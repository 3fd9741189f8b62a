"""Which decode-matmul candidates the session times per role and layout (bf16, interleaved int8 / int4,
tinygemm-laid int4), and that the fastest is kept: the timing itself is replaced by a fake clock (the real
one needs CUDA graphs; ``tests/test_quant_cuda.py`` runs the kernels)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_linears
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import QuantScheme, group_gemv, interleaved, operand_dot
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.linear import QuantMatrix


def _matrix(rows: int, cols: int, **layout) -> QuantMatrix:
    scheme = QuantScheme(4, 128)
    return QuantMatrix(torch.zeros(rows, cols // 8, dtype=torch.int32), torch.ones(rows, cols // 128), scheme,
                       **layout)


def test_each_layout_times_its_own_kernels_and_the_fastest_wins(monkeypatch, caplog):
    clock = iter(range(1000, 0, -1))  # every later candidate is "faster": the last one timed must win
    monkeypatch.setattr(decode_linears, "_graph_seconds", lambda step, calls: next(clock) * 1e-6)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "fake")
    monkeypatch.setattr(group_gemv, "kernel_problem", lambda device: None)  # its GPU probe: passed
    monkeypatch.setattr(operand_dot, "kernel_problem", lambda device: None)
    weights = SimpleNamespace(
        embed=torch.zeros(8, 256), input_norms=[torch.ones(256)], eps=1e-5,
        qkv=[_matrix(384, 256, scales_zeros=torch.zeros(2, 384, 2))], o=[_matrix(256, 256, interleaved=True)],
        gate_up=[_matrix(512, 256, interleaved=True)], down=[torch.zeros(256, 256)])
    with caplog.at_level("INFO", logger=decode_linears.logger.name):
        timings = decode_linears.time_candidates(weights, 1, "auto")
    # the first run's wait is announced with its size (and shown as a progress bar)
    assert f"Timing {sum(len(t) for t in timings.values())} decode matmul kernels at batch 1" in caplog.text
    assert list(timings["qkv"]) == [decode_linears.TINYGEMM]
    assert {c.kernel for c in timings["gate_up"]} == {"gemv", "dot", "group_gemv", "operand_dot"}
    assert all(c.config in interleaved.GEMV_CONFIGS + interleaved.DOT_CONFIGS + group_gemv.CONFIGS + operand_dot.CONFIGS
               for c in timings["gate_up"])
    # 256 columns are 2 groups: only the operand-layout configurations of one group per k-step and no split fit
    assert {c.config for c in timings["gate_up"] if c.kernel == "operand_dot"} == {
        c for c in operand_dot.CONFIGS if c[1] * c[4] <= 2}
    assert decode_linears.CUBLAS in timings["down"]  # bf16 keeps cuBLAS among its candidates
    chosen = decode_linears.select_linears(weights, 1, "auto")
    assert chosen["qkv"] == decode_linears.TINYGEMM and str(chosen["qkv"]) == "tinygemm"
    assert chosen["gate_up"].kernel == "operand_dot"  # timed last
    assert decode_linears.candidates("gate_up", 16, "auto", True, True)[0].config in interleaved.DOT_CONFIGS


def test_the_group_gemv_is_timed_only_where_its_probe_passed(monkeypatch):
    mats = [_matrix(512, 256, interleaved=True)]
    monkeypatch.setattr(group_gemv, "kernel_problem", lambda device: None)
    assert any(c.kernel == "group_gemv" for c in decode_linears.role_candidates(mats, "gate_up", 1, "auto"))
    monkeypatch.setattr(group_gemv, "kernel_problem", lambda device: "disagrees with dequantize-then-matmul")
    found = decode_linears.role_candidates(mats, "gate_up", 1, "auto")
    assert found and not any(c.kernel == "group_gemv" for c in found)  # the other one-row kernels remain


def test_the_operand_layout_kernel_is_timed_at_every_batch_only_where_its_probe_passed(monkeypatch):
    mats = [_matrix(512, 1024, interleaved=True)]
    for rows in (1, 8, 16):
        monkeypatch.setattr(operand_dot, "kernel_problem", lambda device: None)
        found = decode_linears.role_candidates(mats, "gate_up", rows, "auto")
        assert {c.config for c in found if c.kernel == "operand_dot"} == set(operand_dot.CONFIGS)
        assert {c.fused for c in found if c.kernel == "operand_dot"} == {True, False}  # the norm inside, or not
        monkeypatch.setattr(operand_dot, "kernel_problem", lambda device: "disagrees with dequantize-then-matmul")
        found = decode_linears.role_candidates(mats, "gate_up", rows, "auto")
        assert found and not any(c.kernel == "operand_dot" for c in found)


def test_the_probes_name_what_failed_where_they_cannot_run():
    for family in (group_gemv, operand_dot):
        problem = family.kernel_problem("cpu")  # no Triton kernel runs on CPU tensors (or Triton is missing)
        assert isinstance(problem, str) and problem
