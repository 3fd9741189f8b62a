"""Benchmark Token2Wav (flow decoder + HiFT vocoder) and measure bf16 / fp16 error against fp32.

Full official dimensions with random weights (nothing is downloaded): flow input 512, Conformer
8 heads / FFN 2048 / 6 + 4 blocks, DiT 16 blocks of width 512 (8 x 64), HiFT base 512 with upsampling
[8, 5, 3] and iSTFT 16/4 (the HiFT part of the official yaml is reconstructed, see the parity README).
Each clip decodes ``--seconds`` of speech (default 30 s = 1,250 tokens) with a ``--prompt-seconds``
(default 10 s) prompt, at batch sizes ``--batch`` (default 1 and 8), 10 Euler steps.

Random weights are drawn like the parity fixtures (Linear/Conv N(0, 1/fan_in), weight-normalised
HiFT convs with unit gain, LayerNorm 1 + 0.1 N, Snake alpha 1 + 0.2 |N|, non-zero adaLN), then the
vocoder is calibrated to speech-like signals (f0 ~150 +- 50 Hz, output RMS ~0.07). Random weights
are rougher than trained ones, so the errors below are pessimistic indications, not quality
measurements. The same initial noise and sine-source noise are used for every dtype, so the error
columns measure only the arithmetic:

* ``flow``: mel of the flow in that dtype vs the fp32 mel;
* ``hift``: waveform of that dtype's vocoder fed the fp32 mel vs the fp32 waveform;
* ``e2e``: end-to-end waveform vs fp32 (SNR in dB = 10 log10(|ref|^2 / |diff|^2)).

``--attn-check`` decodes a ragged batch with every DiT attention backend available here
(flash_attention_2, xformers, sdpa, eager) and reports the mel difference to sdpa.

The HiFT block of the official yaml is not public (the real ``hift.pt`` is 117 MB, the built-in
reconstruction 83 MB of weights), so ``--yaml path/to/CosyVoice-300M-25Hz/cosyvoice.yaml`` takes the
dims from a real file instead (weights stay random).

``--new-lengths N`` also decodes N clip lengths the process has not seen, each twice: the first call's extra
time is what a new request's shape costs (every real request has a new length).
``--no-flow-graph`` runs every Euler step eagerly (on CUDA the steps after the first replay one graph).

GPU: ``python bench/bench_decoder.py --device cuda --json out.json --markdown out.md --attn-check``
CPU smoke test with tiny dims: ``python bench/bench_decoder.py --tiny``
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.config import (
    CosyVoiceConfig,
    load_cosyvoice_config,
    parse_cosyvoice_config,
)
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.flow import FlowModel
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.hift import HiFTGenerator, Snake
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.random_weights import COSYVOICE_FULL_DIMS, COSYVOICE_TINY_DIMS, cosyvoice_yaml
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.token2wav import Token2Wav, Token2WavInput
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import backend_unavailable_reason

from bench_common import device_description, sync, synthetic_speech, timed, write_report

logger = logging.getLogger("bench_decoder")

F0_BIAS_HZ = 150.0  # speech-like pitch; few frames fall under the 10 Hz voicing threshold
LOG_MAGNITUDE_BIAS = -1.8
F0_SPREAD_HZ = 50.0
TARGET_RMS = 0.07
CALIBRATION_SECONDS = 2.4
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_config(tiny: bool, yaml_path: Path | None = None) -> CosyVoiceConfig:
    if yaml_path is not None:
        return load_cosyvoice_config(yaml_path)
    return parse_cosyvoice_config(cosyvoice_yaml(COSYVOICE_TINY_DIMS if tiny else COSYVOICE_FULL_DIMS))


@torch.no_grad()
def random_states(cfg: CosyVoiceConfig, seed: int) -> tuple[dict, dict]:
    """fp32 CPU state dicts with fixture-like random values (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)

    def normal(shape, std=1.0):
        return torch.randn(shape, generator=gen) * std

    flow, hift = FlowModel(cfg.flow), HiFTGenerator(cfg.hift)
    plain = {id(m) for m in list(hift.source_downs) + [hift.m_source.l_linear, hift.f0_predictor.classifier]}
    for module in list(flow.modules()) + list(hift.modules()):
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
            in_hift = any(module is m for m in hift.modules())
            if in_hift and id(module) not in plain:  # weight-normalised layer: g = 1, v ~ N(0, 1)
                v = normal(module.weight.shape)
                module.weight.copy_(v / v.flatten(1).norm(dim=1).view(-1, *[1] * (v.ndim - 1)))
            else:
                module.weight.copy_(normal(module.weight.shape, 1 / math.sqrt(module.weight[0].numel())))
            if module.bias is not None:
                module.bias.copy_(normal(module.bias.shape, 0.03))
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.weight.copy_(1 + normal(module.weight.shape, 0.1))
            module.bias.copy_(normal(module.bias.shape, 0.1))
        elif isinstance(module, nn.Embedding):
            module.weight.copy_(normal(module.weight.shape))
        elif isinstance(module, Snake):
            module.alpha.copy_(1 + normal(module.alpha.shape, 0.2).abs())
    for layer in list(flow.encoder.encoders) + list(flow.encoder.up_encoders):
        layer.self_attn.pos_bias_u.copy_(normal(layer.self_attn.pos_bias_u.shape, 0.1))
        layer.self_attn.pos_bias_v.copy_(normal(layer.self_attn.pos_bias_v.shape, 0.1))
    hift.f0_predictor.classifier.bias.fill_(F0_BIAS_HZ)
    hift.conv_post.bias[: cfg.hift.istft_n_fft // 2 + 1] = LOG_MAGNITUDE_BIAS
    return flow.state_dict(), hift.state_dict()


@torch.no_grad()
def calibrate(cfg: CosyVoiceConfig, flow_state: dict, hift_state: dict, device: torch.device, seed: int,
              seconds: float = CALIBRATION_SECONDS) -> dict:
    """Scale the random vocoder so its output looks like speech: f0 ~150 +- 50 Hz and waveform RMS ~0.07."""
    t2w = Token2Wav.build(cfg, flow_state, hift_state, device=device, dtype=torch.float32)
    items, cfm, sine = make_inputs(t2w, 1, seconds, seconds / 2, seed + 7)
    mel = t2w.run_flow(t2w.prepare(items), cfm_noise=cfm)[0]
    f0p = t2w.hift.f0_predictor
    feats = f0p.condnet(mel[None].float()).transpose(1, 2)
    raw = feats @ f0p.classifier.weight.T
    hift_state = dict(hift_state)
    hift_state["f0_predictor.classifier.weight"] = hift_state["f0_predictor.classifier.weight"] * (
        F0_SPREAD_HZ / float(raw.std()))
    half = cfg.hift.istft_n_fft // 2 + 1
    for _ in range(2):
        voc = Token2Wav.build(cfg, None, hift_state, device=device, dtype=torch.float32)
        wave = voc.run_vocoder([mel], sine_noise=sine)[0].waveform
        rms = float(wave.pow(2).mean().sqrt())
        bias = hift_state["conv_post.bias"].clone()
        bias[:half] += math.log(TARGET_RMS / max(rms, 1e-6))
        hift_state["conv_post.bias"] = bias
    return hift_state


def _prompt_speech(seconds: float, sr: int, seed: int) -> torch.Tensor:
    return synthetic_speech(seconds, sr, seed=seed, peak=C.EDIT_INPUT_PEAK)[0]


def random_ids(groups: int, rng: np.random.Generator) -> list[int]:
    ids = []
    for _ in range(groups):
        ids += [C.VQ02_FIRST_ID + int(c) for c in rng.integers(0, C.VQ02_CODEBOOK_SIZE, C.VQ02_PER_GROUP)]
        ids += [C.VQ06_FIRST_ID + int(c) for c in rng.integers(0, C.VQ06_CODEBOOK_SIZE, C.VQ06_PER_GROUP)]
    return ids


def make_inputs(t2w: Token2Wav, batch: int, seconds: float, prompt_seconds: float, seed: int):
    rng = np.random.default_rng(seed)
    groups = round(seconds / C.GROUP_SECONDS)
    prompt_groups = round(prompt_seconds / C.GROUP_SECONDS)
    items, cfm, sine = [], [], []
    up, hop = t2w.config.mel_frames_per_token_frame, t2w.config.hift.samples_per_frame
    for b in range(batch):
        mel = t2w.prompt_mel(_prompt_speech(prompt_seconds, C.OUTPUT_SAMPLE_RATE, seed + b), C.OUTPUT_SAMPLE_RATE)
        spk = torch.from_numpy(rng.standard_normal(t2w.config.flow.spk_embed_dim).astype(np.float32))
        items.append(Token2WavInput(random_ids(groups, rng), random_ids(prompt_groups, rng), mel.cpu(), spk))
        g = torch.Generator().manual_seed(seed + 1000 + b)
        frames = C.VQ06_PER_GROUP * (groups + prompt_groups)
        cfm.append(torch.randn(t2w.config.flow.output_size, up * frames, generator=g))
        sine.append(torch.randn(hop * up * C.VQ06_PER_GROUP * groups, t2w.config.hift.nb_harmonics + 1, generator=g))
    return items, cfm, sine


def errors(got: list[torch.Tensor], ref: list[torch.Tensor], t2w: Token2Wav | None = None) -> dict[str, float]:
    """max / mean abs difference and SNR; for waveforms (``t2w`` given) also the mean abs difference of their
    log-mels, which ignores inaudible phase drift."""
    d = torch.cat([(g.double().cpu() - r.double().cpu()).reshape(-1) for g, r in zip(got, ref)])
    r = torch.cat([x.double().cpu().reshape(-1) for x in ref])
    out = {"max_abs": float(d.abs().max()), "mean_abs": float(d.abs().mean()),
           "snr_db": float(10 * torch.log10(r.pow(2).sum() / d.pow(2).sum().clamp_min(1e-30)))}
    if t2w is not None:
        mel = lambda w: t2w.prompt_mel(w.float().cpu(), t2w.sample_rate)
        out["logmel_mean_abs"] = float(torch.cat([(mel(g) - mel(x)).abs().reshape(-1) for g, x in zip(got, ref)]).mean())
    return out


def measure(cfg: CosyVoiceConfig, flow_state: dict, hift_state: dict, device: torch.device, name: str, batch: int,
            args: argparse.Namespace, reference: dict | None) -> tuple[dict, dict]:
    """Time prepare / flow / HiFT for one dtype and batch; errors against ``reference`` (the fp32 outputs)."""
    t2w = Token2Wav.build(cfg, flow_state, hift_state, device=device, dtype=DTYPES[name],
                          attn_implementation=args.attn, hift_dtype=DTYPES[name])
    t2w.flow.decoder.cuda_graph = not args.no_flow_graph
    items, cfm, sine = make_inputs(t2w, batch, args.seconds, args.prompt_seconds, args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_prep, prepared = timed(lambda: t2w.prepare(items), device, args.warmup, args.repeats)
    t_flow, mels = timed(lambda: t2w.run_flow(prepared, cfm_noise=cfm), device, args.warmup, args.repeats)
    t_hift, outs = timed(lambda: t2w.run_vocoder(mels, sine_noise=sine), device, args.warmup, args.repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    total = t_prep["median_ms"] + t_flow["median_ms"] + t_hift["median_ms"]
    audio_s = batch * C.GROUP_SECONDS * round(args.seconds / C.GROUP_SECONDS)
    row = {"batch": batch, "dtype": name, "dit_attn": t2w.dit_attn, "conformer_attn": t2w.conformer_attn,
           "prepare": t_prep, "flow": t_flow, "hift": t_hift, "total_ms": total,
           "x_realtime": audio_s / (total / 1000), "peak_gib": peak}
    outputs = {"mels": [m.cpu() for m in mels], "waves": [o.waveform.cpu() for o in outs],
               "f0": [o.f0.cpu() for o in outs]}
    if reference is not None:
        hift_only = t2w.run_vocoder([m.to(device) for m in reference["mels"]], sine_noise=sine)
        row["error_vs_fp32"] = {
            "flow_mel": errors(outputs["mels"], reference["mels"]),
            "hift_wave": errors([o.waveform for o in hift_only], reference["waves"], t2w),
            "e2e_wave": errors(outputs["waves"], reference["waves"], t2w),
            "e2e_f0_hz": errors(outputs["f0"], reference["f0"]),
        }
    logger.info("B=%d %s: flow %.1f ms, HiFT %.1f ms", batch, name, t_flow["median_ms"], t_hift["median_ms"])
    if args.new_lengths:
        row["new_length"] = new_length_costs(t2w, batch, args, device)
        logger.info("B=%d %s, lengths not decoded before: %s", batch, name, row["new_length"])
    if args.profile_flow and device.type == "cuda":
        row["flow_profile"] = profile_flow(t2w, prepared, cfm, device)
        logger.info("B=%d %s flow profile:\n%s", batch, name, row["flow_profile"]["table"])
    return row, outputs


def new_length_costs(t2w: Token2Wav, batch: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Flow and HiFT ms at ``--new-lengths`` clip lengths this process has not decoded before (one token group
    longer each), each against a second call at the same length: what the shape of a new request costs on top
    (cuDNN plans per conv shape, the allocator), which every real request pays."""
    times: dict[str, list[float]] = {"flow_new_ms": [], "flow_again_ms": [], "hift_new_ms": [], "hift_again_ms": []}
    for i in range(1, args.new_lengths + 1):
        items, cfm, sine = make_inputs(t2w, batch, args.seconds + i * C.GROUP_SECONDS, args.prompt_seconds,
                                       args.seed + i)
        for when in ("new", "again"):
            prepared = t2w.prepare(items)
            t_flow, mels = timed(lambda: t2w.run_flow(prepared, cfm_noise=cfm), device, 0, 1)
            t_hift, _ = timed(lambda: t2w.run_vocoder(mels, sine_noise=sine), device, 0, 1)
            times[f"flow_{when}_ms"].append(t_flow["median_ms"])
            times[f"hift_{when}_ms"].append(t_hift["median_ms"])
    return {key: statistics.median(values) for key, values in times.items()} | {"lengths": args.new_lengths}


def profile_flow(t2w: Token2Wav, prepared, cfm: list, device: torch.device) -> dict:
    """One flow call under torch.profiler: wall time, time the GPU spent in kernels, kernel launches, and the
    costliest kernels (is the flow launch-bound or busy?)."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        t2w.run_flow(prepared, cfm_noise=cfm)
        sync(device)
        wall = time.perf_counter() - start
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6
    launches = sum(e.count for e in kernels)
    return {"wall_s": wall, "gpu_busy_s": busy, "kernel_launches": launches,
            "table": prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18)}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cfg = make_config(args.tiny, args.yaml)
    flow_state, hift_state = random_states(cfg, args.seed)
    hift_state = calibrate(cfg, flow_state, hift_state, device, args.seed, min(CALIBRATION_SECONDS, args.seconds))
    report: dict = {
        "device": device_description(device), "tiny": args.tiny, "seconds": args.seconds, "prompt_seconds": args.prompt_seconds,
        "steps": C.DECODER_CFM_STEPS,
        "tf32": {"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul_precision": torch.get_float32_matmul_precision()},
        "dims": str(args.yaml) if args.yaml else (COSYVOICE_TINY_DIMS if args.tiny else COSYVOICE_FULL_DIMS), "runs": [], "attn_check": [],
    }
    for batch in args.batch:
        reference = None
        for name in args.dtypes:
            row, outputs = measure(cfg, flow_state, hift_state, device, name, batch, args, reference)
            reference = reference or outputs
            report["runs"].append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.attn_check:
        report["attn_check"] = attention_check(cfg, flow_state, hift_state, device, args)
    return report


def attention_check(cfg, flow_state, hift_state, device, args) -> list[dict]:
    """Ragged batch of 2 through every available DiT backend; mel difference to sdpa (same dtype)."""
    name = "bf16" if device.type == "cuda" else "fp32"
    t2w = Token2Wav.build(cfg, flow_state, hift_state, device=device, dtype=DTYPES[name], attn_implementation="sdpa")
    items, cfm, _ = make_inputs(t2w, 2, args.seconds, args.prompt_seconds, args.seed)
    items[1].generated_ids = items[1].generated_ids[: len(items[1].generated_ids) // 2]
    prepared = t2w.prepare(items)
    ref = t2w.run_flow(prepared, cfm_noise=cfm)
    rows = []
    for backend in ("flash_attention_2", "xformers", "sdpa", "eager"):
        reason = backend_unavailable_reason(backend, device)
        if reason is not None:
            rows.append({"backend": backend, "dtype": name, "skipped": reason})
            continue
        t2w.flow.decoder.estimator.set_attn_backend(backend)
        t, mels = timed(lambda: t2w.run_flow(prepared, cfm_noise=cfm), device, args.warmup, args.repeats)
        rows.append({"backend": backend, "dtype": name, "flow": t, "mel_vs_sdpa": errors(mels, ref)})
    return rows


def markdown(report: dict) -> str:
    lines = [
        (f"### Token2Wav decode: {report['seconds']:g} s per clip, {report['prompt_seconds']:g} s prompt, "
         f"{report['steps']} Euler steps ({'tiny' if report['tiny'] else 'full-size'} dims, random weights)"),
        f"Device: {report['device']['name']}, torch {report['device']['torch']}, {report['device']['date']}.", "",
        "| B | dtype | DiT / Conformer attn | prepare ms | flow ms | HiFT ms | total ms | x realtime | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(f"| {r['batch']} | {r['dtype']} | {r['dit_attn']} / {r['conformer_attn']} | "
                     f"{r['prepare']['median_ms']:.1f} | {r['flow']['median_ms']:.1f} | {r['hift']['median_ms']:.1f} | "
                     f"{r['total_ms']:.1f} | {r['x_realtime']:.1f} | {r['peak_gib']:.2f} |")
    fresh = [r for r in report["runs"] if "new_length" in r]
    if fresh:
        lines += ["", (f"Clip lengths not decoded before in the process ({fresh[0]['new_length']['lengths']} lengths, "
                       "medians), each against a second call at the same length"), "",
                  "| B | dtype | flow ms new / again | HiFT ms new / again |", "|---|---|---|---|"]
        for r in fresh:
            n = r["new_length"]
            lines.append(f"| {r['batch']} | {r['dtype']} | {n['flow_new_ms']:.1f} / {n['flow_again_ms']:.1f} | "
                         f"{n['hift_new_ms']:.1f} / {n['hift_again_ms']:.1f} |")
    errs = [r for r in report["runs"] if "error_vs_fp32" in r]
    if errs:
        lines += ["", ("Error against fp32 (same weights and noise): max abs / mean abs / SNR dB; for waveforms also "
                       "the mean abs log-mel difference of the audio (phase-insensitive)"), "",
                  "| B | dtype | flow mel | HiFT-only waveform | end-to-end waveform | end-to-end f0 Hz (max / mean) |",
                  "|---|---|---|---|---|---|"]
        for r in errs:
            cells = []
            for k in ("flow_mel", "hift_wave", "e2e_wave"):
                e = r["error_vs_fp32"][k]
                cell = f"{e['max_abs']:.2e} / {e['mean_abs']:.2e} / {e['snr_db']:.1f} dB"
                if "logmel_mean_abs" in e:
                    cell += f" / log-mel {e['logmel_mean_abs']:.3f}"
                cells.append(cell)
            f0 = r["error_vs_fp32"]["e2e_f0_hz"]
            cells.append(f"{f0['max_abs']:.2f} / {f0['mean_abs']:.3f}")
            lines.append(f"| {r['batch']} | {r['dtype']} | " + " | ".join(cells) + " |")
    if report["attn_check"]:
        lines += ["", "DiT attention backends (ragged batch of 2): flow ms and mel difference to sdpa", "",
                  "| backend | dtype | flow ms | mel max abs |", "|---|---|---|---|"]
        for r in report["attn_check"]:
            if "skipped" in r:
                lines.append(f"| {r['backend']} | {r['dtype']} | skipped: {r['skipped']} | |")
            else:
                lines.append(f"| {r['backend']} | {r['dtype']} | {r['flow']['median_ms']:.1f} | "
                             f"{r['mel_vs_sdpa']['max_abs']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny dims, CPU, short clips: a smoke test")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available, cpu with --tiny)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 1 8; tiny: 1 2)")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=list(DTYPES),
                        help="first is the reference (default fp32 bf16 fp16; CPU: fp32 bf16)")
    parser.add_argument("--seconds", type=float, default=None, help="generated speech per clip (default 30; tiny 1.2)")
    parser.add_argument("--prompt-seconds", type=float, default=None, help="prompt length (default 10; tiny 0.6)")
    parser.add_argument("--yaml", type=Path, default=None,
                        help="take the dims from this cosyvoice.yaml (e.g. the real one) instead of the built-in ones")
    parser.add_argument("--attn", default="auto", help="attention implementation for the runs")
    parser.add_argument("--attn-check", action="store_true", help="compare every available DiT attention backend")
    parser.add_argument("--profile-flow", action="store_true", help="profile one flow call per batch and dtype")
    parser.add_argument("--new-lengths", type=int, default=0,
                        help="also decode this many clip lengths not seen before, each twice (per-shape costs)")
    parser.add_argument("--no-flow-graph", action="store_true",
                        help="run every Euler step eagerly (the flow's CUDA graph off: decoder/flow_graph.py)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown tables here")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    on_gpu = args.device.startswith("cuda")
    args.batch = args.batch or ([1, 2] if args.tiny else [1, 8])
    args.dtypes = args.dtypes or (["fp32", "bf16", "fp16"] if on_gpu else ["fp32", "bf16"])
    args.seconds = args.seconds or (1.2 if args.tiny else 30.0)
    args.prompt_seconds = args.prompt_seconds or (0.6 if args.tiny else 10.0)
    args.warmup = 1 if args.warmup is None else args.warmup
    args.repeats = args.repeats or (1 if args.tiny else 3)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    text = markdown(report)
    sys.stdout.write(text)
    write_report(report, text, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
