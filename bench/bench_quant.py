"""Quantized Step1 (int8 / int4 weight-only, group 128) side by side with bf16, in one run.

* decode: a full-size random Step1 in bf16, then the same weights quantized (int8, int4), batch 1 / 8 / 16,
  1,300-token prompts (tokens/s, ms per step, weight bytes read per second, peak VRAM); on request also
  ``int4-interleaved``, a study: int4 with every role laid out for our kernels (no tinygemm layout for q/k/v,
  o and down), so the decode session times the operand-layout kernel on them too;
* quality drift of the quantized model against bf16 on the same full-size random weights: logits of the
  last prompt positions (relative L2 error, top-1 agreement, KL) and greedy continuations (tokens until the
  first difference). Random weights only BOUND the error: a trained model's logits are peakier;
* end to end: a full random model folder, loaded through the engine as bf16, quantized on load (int8,
  int4) and as a 4-bit compressed-tensors folder in StepFun's AWQ layout (written from the same weights,
  decoder and tokenizer read from the bf16 folder beside it): load time, 30 s edit wall time, decode
  tokens/s, peak VRAM.

    python bench/bench_quant.py --device cuda --models /tmp/e2e_models --json quant.json --markdown quant.md
    python bench/bench_quant.py --tiny          # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys
import time
from pathlib import Path

import torch
from comfyui_step_audio_editx.engines.step_audio_editx import (
    AUDIO_TOKENS_PER_SECOND,
    AWQ_DIRNAME,
    EditRequest,
    EngineConfig,
    GenerationSettings,
    StepAudioEditX,
    write_random_model,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate, release_decode_session
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import (
    QuantScheme,
    quantize,
    quantize_step1_,
    scheme_for_columns,
    tinygemm,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.linear import QUANT_TARGETS
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig

from bench_common import BYTES_PER_GIB, device_description, random_step1, sync, write_report
from memory_profile import live_at_peak, module_gib
from bench_e2e import EDIT_TEXT, clip, stage_row, timed_edit
from bench_generation import AUDIO_HEAD_SCALE, TINY_DIMS, random_prompts, time_call

logger = logging.getLogger("bench_quant")

VARIANTS: tuple[tuple[str, int | None], ...] = (("bf16", None), ("int8", 8), ("int4", 4))
INT4_INTERLEAVED = "int4-interleaved"  # decode study, only when asked for: int4 without tinygemm's layout
FULL = {"prompt_tokens": 1300, "new_tokens": 512, "batches": (1, 8, 16), "drift_positions": 64, "greedy": 64,
        "edit_s": 30.0}
TINY = {"prompt_tokens": 40, "new_tokens": 12, "batches": (1, 4), "drift_positions": 8, "greedy": 8, "edit_s": 2.0}


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def make_model(dims: dict, device, bits: int | None, never_stop: bool):
    model = random_step1(dims, device, torch.bfloat16 if device.type == "cuda" else torch.float32, "sdpa", seed=0,
                         never_stop=never_stop, audio_head_scale=AUDIO_HEAD_SCALE)
    if bits is not None:
        quantize_step1_(model, bits)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return model


def decode_runs(dims: dict, device, run: dict, variants: set[str] | None = None) -> list[dict]:
    rows = []
    config = SamplingConfig()  # the official sampling: temperature 0.7
    study = ((INT4_INTERLEAVED, 4),) if variants is not None and INT4_INTERLEAVED in variants else ()
    for name, bits in VARIANTS + study:
        if variants is not None and name not in variants:
            continue
        model = make_model(dims, device, bits, never_stop=True)
        size = weight_bytes(model)
        with _tinygemm_refused() if name == INT4_INTERLEAVED else contextlib.nullcontext():
            for batch in run["batches"]:
                prompts = random_prompts(batch, run["prompt_tokens"], seed=batch)
                result = time_call(model, prompts, run["new_tokens"], config, True, device, size, name)
                rows.append({"weights": name, "weight_gb": size / 1e9, **result.__dict__})
                logger.info("%s batch %d: %.0f tokens/s (%.3f ms/step)", name, batch,
                            result.tokens_per_s_total or 0, result.ms_per_step or 0)
        release_decode_session(model)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


@contextlib.contextmanager
def _tinygemm_refused():
    """While open, no matrix is laid out for tinygemm: the decode session lays every int4 role out for our
    kernels (the layout is chosen once, when the session fuses the weights)."""
    eligible = tinygemm.eligible
    tinygemm.eligible = lambda *_: False
    try:
        yield
    finally:
        tinygemm.eligible = eligible


@torch.no_grad()
def drift(reference, candidate, prompt: list[int], positions: int, greedy: int) -> dict:
    """Logit and greedy-continuation differences of ``candidate`` against ``reference`` on one prompt."""
    ids = torch.tensor([prompt], device=reference.lm_head.weight.device)
    a = reference(ids).logits[0, -positions:].float()
    b = candidate(ids).logits[0, -positions:].float()
    log_a, log_b = a.log_softmax(-1), b.log_softmax(-1)
    kl = (log_a.exp() * (log_a - log_b)).sum(-1)
    raw = SamplingConfig(do_sample=False, repetition_guard=False)
    ref_tokens = generate(reference, [prompt], [greedy], raw, [0])[0].tokens
    cand_tokens = generate(candidate, [prompt], [greedy], raw, [0])[0].tokens
    same = next((i for i, (x, y) in enumerate(zip(ref_tokens, cand_tokens)) if x != y), min(len(ref_tokens),
                                                                                            len(cand_tokens)))
    return {"logits_rel_l2": float((a - b).norm() / a.norm()), "top1_agree": float((a.argmax(-1) == b.argmax(-1))
                                                                                   .float().mean()),
            "kl_mean": float(kl.mean()), "kl_max": float(kl.max()), "greedy_tokens": len(ref_tokens),
            "greedy_same_prefix": same}


def drift_runs(dims: dict, device, run: dict) -> list[dict]:
    reference = make_model(dims, device, None, never_stop=False)
    prompt = random_prompts(1, run["prompt_tokens"], seed=99)[0]
    rows = []
    for name, bits in VARIANTS[1:]:
        candidate = make_model(dims, device, bits, never_stop=False)
        rows.append({"weights": name, **drift(reference, candidate, prompt, run["drift_positions"], run["greedy"])})
        release_decode_session(candidate)
        del candidate
    release_decode_session(reference)
    del reference
    gc.collect()
    return rows


@torch.no_grad()
def parity_runs(parity_dir: Path) -> list[dict]:
    """The parity fixture's tiny model (official reference outputs) in fp32 on the CPU: bf16-file weights as
    they are, then quantized on load; logits against the official implementation's and its greedy tokens."""
    from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import load_step1
    import numpy as np

    ref = np.load(parity_dir / "reference" / "step1_logits.npz")
    columns = torch.from_numpy(ref["logit_columns"]).long()
    rows = []
    for name, quant in (("as stored", "none"), ("int8", "int8"), ("int4", "int4")):
        model = load_step1(parity_dir / "Step-Audio-EditX", device="cpu", dtype="fp32", quantize=quant)
        ids = torch.from_numpy(ref["seq300_input_ids"]).long()[None]
        got = model(ids).logits[0][:, columns]
        want = torch.from_numpy(ref["seq300_logits_cols"]).float()
        raw = SamplingConfig(do_sample=False, repetition_guard=False, constrain_audio=False)
        expected = ref["greedy_new_tokens"].tolist()
        tokens = generate(model, [ids[0].tolist()], [len(expected)], raw, [0])[0].tokens
        same = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), len(expected))
        rows.append({"weights": name, "logits_rel_l2": float((got - want).norm() / want.norm()),
                     "argmax_agree": float((got.argmax(-1) == want.argmax(-1)).float().mean()),
                     "greedy_same_prefix": same, "greedy_tokens": len(expected)})
    return rows


def write_awq_folder(models: Path, device, bits: int = 4) -> Path:
    """A compressed-tensors pack-quantized folder (StepFun's AWQ layout) from the bf16 folder's weights; its
    decoder and tokenizer.model stay in the bf16 folder beside it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source, target = models / "Step-Audio-EditX", models / AWQ_DIRNAME
    target.mkdir(exist_ok=True)
    tensors = {}
    config = json.loads((source / "config.json").read_text())
    widths = (config["hidden_size"], config["intermediate_size"])
    scheme = QuantScheme(bits, min(scheme_for_columns(bits, w).group_size for w in widths))  # one group size
    names = json.loads((source / "model.safetensors.index.json").read_text())["weight_map"]
    for shard in sorted(set(names.values())):
        with safe_open(str(source / shard), framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                module = key.removesuffix(".weight")
                if key.endswith(".weight") and module.split(".", 3)[-1] in QUANT_TARGETS:
                    packed, scale = (t.cpu() for t in quantize(tensor.to(device), scheme))
                    tensors.update({f"{module}.weight_packed": packed, f"{module}.weight_scale": scale,
                                    f"{module}.weight_shape": torch.tensor(list(tensor.shape))})
                else:
                    tensors[key] = tensor
    save_file(tensors, str(target / "model.safetensors"))
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "ignore": ["lm_head"], "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                                             "output_activations": None, "weights": {
                                                                 "num_bits": bits, "type": "int", "symmetric": True,
                                                                 "strategy": "group", "group_size": scheme.group_size}}}}
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


E2E_CASES: tuple[tuple[str, str, str], ...] = (
    ("bf16", "Step-Audio-EditX", "none"), ("int8 on load", "Step-Audio-EditX", "int8"),
    ("int4 on load", "Step-Audio-EditX", "int4"), ("AWQ-layout 4-bit folder", AWQ_DIRNAME, "none"))


def e2e_runs(models: Path, device, run: dict, tiny: bool, cases: set[str] | None = None) -> list[dict]:
    chosen = [c for c in E2E_CASES if cases is None or c[0] in cases]
    if not (models / "Step-Audio-EditX" / "config.json").is_file():
        write_random_model(models, seed=0, size="tiny" if tiny else "full", never_stop=True)
    if any(c[1] == AWQ_DIRNAME for c in chosen) and not (models / AWQ_DIRNAME / "config.json").is_file():
        write_awq_folder(models, device)
    gen = round(run["edit_s"] * AUDIO_TOKENS_PER_SECOND) if not tiny else 40
    fixed = GenerationSettings(dynamic_tokens=False, max_new_tokens=gen)
    rows = []
    for label, editx, quant in chosen:
        engine = StepAudioEditX(EngineConfig(editx_dir=str(models / editx), search_roots=(str(models),),
                                             device=str(device), quantize=quant))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        engine.load()
        sync(device)
        load_s = time.perf_counter() - start
        load_peak = torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB if device.type == "cuda" else None
        warm = GenerationSettings(dynamic_tokens=False, max_new_tokens=100)
        timed_edit(engine, [EditRequest(*clip(2.0, 90), EDIT_TEXT, "emotion", "happy", seed=1)], warm, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        edit = EditRequest(*clip(run["edit_s"], 1), EDIT_TEXT, "emotion", "happy", seed=7)
        wall, (result,) = timed_edit(engine, [edit], fixed, device)
        row = {"weights": label, "load_s": load_s, "load_peak_vram_gib": load_peak,
               **stage_row(f"{run['edit_s']:.0f} s edit, {gen} new tokens", wall, result)}
        if device.type == "cuda":
            row["peak_vram_gib"] = torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB
        rows.append(row)
        logger.info("e2e %s: %s", label, row)
        engine.unload()
        del engine, result
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


MEMORY_CASES: tuple[tuple[str, dict], ...] = (("int4 on load", {"quantize": "int4"}),)


def memory_runs(models: Path, device, run: dict, tiny: bool) -> list[dict]:
    """Where the 30 s edit's peak VRAM goes (weights per part, allocations live at the peak by site)."""
    if not (models / "Step-Audio-EditX" / "config.json").is_file():
        write_random_model(models, seed=0, size="tiny" if tiny else "full", never_stop=True)
    gen = round(run["edit_s"] * AUDIO_TOKENS_PER_SECOND) if not tiny else 40
    fixed = GenerationSettings(dynamic_tokens=False, max_new_tokens=gen)
    rows = []
    for label, options in MEMORY_CASES:
        engine = StepAudioEditX(EngineConfig(editx_dir=str(models / "Step-Audio-EditX"), search_roots=(str(models),),
                                             device=str(device), **options)).load()
        warm = GenerationSettings(dynamic_tokens=False, max_new_tokens=100)
        timed_edit(engine, [EditRequest(*clip(2.0, 90), EDIT_TEXT, "emotion", "happy", seed=1)], warm, device)
        edit = EditRequest(*clip(run["edit_s"], 1), EDIT_TEXT, "emotion", "happy", seed=7)
        torch.cuda.reset_peak_memory_stats(device)
        profile = live_at_peak(lambda engine=engine: timed_edit(engine, [edit], fixed, device), device)
        rows.append({"case": label, "weights_gib": module_gib(engine.modules()),
                     "peak_vram_gib": torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB, **profile})
        logger.info("memory %s: %s", label, rows[-1])
        engine.unload()
        del engine
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def _fmt(value, digits: int = 2) -> str:
    return "" if value is None else (f"{value:,.{digits}f}" if isinstance(value, float) else str(value))


def markdown(report: dict) -> str:
    d = report["device"]
    lines = [f"### Quantized vs bf16 ({d.get('name', d['device'])}, torch {d['torch']}, triton {d['triton']}, "
             f"{d['date']})", ""]
    if report.get("decode"):
        lines += ["| weights | GB | batch | tokens/s | ms/step | TB/s of weights | peak VRAM GiB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in report["decode"]:
            lines.append(f"| {r['weights']} | {r['weight_gb']:.2f} | {r['batch_size']} | {_fmt(r['tokens_per_s_total'], 0)}"
                         f" | {_fmt(r['ms_per_step'], 3)} | {_fmt(r['weights_tb_per_s'])} | {_fmt(r['peak_memory_gib'])} |")
        lines.append("")
    if report.get("drift"):
        lines += ["| weights vs bf16 (random weights: a bound) | logits rel. L2 | top-1 agree | KL mean | KL max | "
                  "greedy: same tokens before first difference |", "|---|---:|---:|---:|---:|---:|"]
        for r in report["drift"]:
            lines.append(f"| {r['weights']} | {r['logits_rel_l2']:.4f} | {r['top1_agree']:.3f} | {r['kl_mean']:.4f} |"
                         f" {r['kl_max']:.4f} | {r['greedy_same_prefix']} of {r['greedy_tokens']} |")
        lines.append("")
    if report.get("parity"):
        lines += ["| parity fixture (official outputs), fp32 CPU | logits rel. L2 | argmax agree (299 positions) | "
                  "greedy: same tokens as official |", "|---|---:|---:|---:|"]
        for r in report["parity"]:
            lines.append(f"| {r['weights']} | {r['logits_rel_l2']:.4f} | {r['argmax_agree']:.3f} | "
                         f"{r['greedy_same_prefix']} of {r['greedy_tokens']} |")
        lines.append("")
    if report.get("e2e"):
        lines += [f"| model | load s | {report['edit_s']:.0f} s edit wall s | decode tok/s | prefill s | peak VRAM GiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in report["e2e"]:
            lines.append(f"| {r['weights']} | {r['load_s']:.1f} | {r['wall_s']:.2f} | {_fmt(r['decode_tok_s'], 0)} | "
                         f"{r['prefill_s']:.3f} | {_fmt(r.get('peak_vram_gib'))} |")
    for r in report.get("memory", []):
        lines += ["", f"Peak VRAM of the {report['edit_s']:.0f} s edit, {r['case']}: {r['peak_vram_gib']:.2f} GiB "
                  f"({r['before_call_gib']:.2f} GiB allocated before the call). Weights GiB: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["weights_gib"].items()) + ". Live at the peak, GiB:", ""]
        lines += [f"- {site}: {gib:.3f}" for site, gib in r["live_at_peak_gib"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="/tmp/step_audio_editx_bench_models")
    parser.add_argument("--parts", default="decode,drift,e2e", help="comma list of decode, drift, e2e, parity, memory")
    parser.add_argument("--parity-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "parity" / "A",
                        help="parity fixture set (for --parts parity)")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--variants", default="", help="comma list of decode variants (default: bf16,int8,int4; also int4-interleaved)")
    parser.add_argument("--e2e-cases", default="", help="comma list of e2e case labels (default: all of "
                        + "; ".join(c[0] for c in E2E_CASES) + ")")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = torch.device(args.device)
    dims, run = (TINY_DIMS, TINY) if args.tiny else ({}, FULL)
    parts = set(args.parts.split(","))
    report: dict = {"device": device_description(device), "size": "tiny" if args.tiny else "full",
                    "edit_s": run["edit_s"]}
    steps = (("decode", lambda: decode_runs(dims, device, run,
                                            set(args.variants.split(",")) if args.variants else None)), ("drift", lambda: drift_runs(dims, device, run)),
             ("e2e", lambda: e2e_runs(Path(args.models), device, run, args.tiny,
                                      set(args.e2e_cases.split(",")) if args.e2e_cases else None)),
             ("parity", lambda: parity_runs(args.parity_dir)),
             ("memory", lambda: memory_runs(Path(args.models), device, run, args.tiny)))
    for name, step in steps:
        if name in parts:
            report[name] = step()
            text = markdown(report)
            write_report(report, text, args.json, args.markdown)  # after each part: a timeout keeps the rest
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
