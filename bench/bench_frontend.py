"""Benchmark the whole audio front end on one clip (default 30 s): preparation, vq02, vq06, speaker embedding.

Full official dimensions with random weights (nothing is downloaded):
* vq02 Paraformer SAN-M encoder: D 512, 4 heads, FFN 2048, 50 blocks, 1024 centroids;
* vq06 S3 tokenizer v1 25 Hz: the default S3Config (1280 wide, 20 heads, 6 layers, 4096 codes);
* CAM++: onnxruntime on ``--campplus`` if given (the real ``campplus.onnx``); otherwise only its fbank
  features are timed, and the report says so.

GPU: ``python bench/bench_frontend.py --device cuda --json out.json --markdown out.md``
CPU smoke test with tiny dims: ``python bench/bench_frontend.py --tiny``
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import torch

from comfyui_step_audio_editx.engines.step_audio_editx.frontend.audio import prepare_audio
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.fbank import (
    FbankConfig,
    ParaformerFrontend,
    speaker_fbank,
)
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.paraformer import (
    SanmEncoderConfig,
    Vq02Tokenizer,
    random_sanm_encoder,
)
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.semantic import Vq06Tokenizer, random_s3tokenizer
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.speaker import SpeakerEncoder
from comfyui_step_audio_editx.engines.step_audio_editx.tiny_models import FULL_PARAFORMER

from bench_common import device_description, synthetic_speech, timed, write_report

logger = logging.getLogger("bench_frontend")

TINY_PARAFORMER = dict(output_size=64, attention_heads=4, linear_units=128, num_blocks=3)
FULL_S3: dict[str, int] = {}  # S3Config's defaults are the v1 tokenizer's dims
TINY_S3 = dict(n_audio_state=64, n_audio_head=2, n_audio_layer=2, n_codebook_size=256)
VQ02_CENTROIDS = 1024
INPUT_RATE = 24_000  # a typical decoder-output clip: exercises resampling to 16 and 24 kHz


def build_vq02(tiny: bool, device: torch.device, dtype: torch.dtype) -> Vq02Tokenizer:
    fbank = FbankConfig()
    cfg = SanmEncoderConfig(input_size=fbank.feature_dim, **(TINY_PARAFORMER if tiny else FULL_PARAFORMER))
    gen = torch.Generator().manual_seed(1)
    cmvn = torch.stack(
        [
            (-12 + torch.randn(fbank.n_mels, generator=gen)).repeat(fbank.lfr_m),
            (0.25 + 0.05 * torch.rand(fbank.n_mels, generator=gen)).repeat(fbank.lfr_m),
        ]
    )
    centroids = torch.randn(VQ02_CENTROIDS, cfg.output_size, generator=gen)
    encoder = random_sanm_encoder(cfg, seed=2).to(device=device, dtype=dtype)
    return Vq02Tokenizer(ParaformerFrontend(fbank, cmvn), encoder, centroids)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    clip = synthetic_speech(args.seconds, INPUT_RATE, channels=2)
    clips = [clip] * args.batch

    vq02 = build_vq02(args.tiny, device, dtype)
    vq06 = Vq06Tokenizer(
        random_s3tokenizer(seed=3, **(TINY_S3 if args.tiny else FULL_S3)).to(device=device, dtype=dtype)
    )
    speaker = None
    speaker_note = "fbank only (no --campplus given: CAM++ onnxruntime not timed)"
    if args.campplus:
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.campplus_cuda else ["CPUExecutionProvider"]
        )
        speaker = SpeakerEncoder.from_onnx(args.campplus, providers=providers)
        speaker_note = f"CAM++ onnxruntime {speaker.session.get_providers()[0]}"

    prepared = [prepare_audio(c, INPUT_RATE, device=device) for c in clips]
    tok_wavs = [p.tokenizer_wav for p in prepared]
    wavs16k = [p.wav16k for p in prepared]

    def speaker_stage():
        if speaker is not None:
            return speaker.embed(wavs16k)
        return [speaker_fbank(w) for w in wavs16k]

    def whole():
        ready = [prepare_audio(c, INPUT_RATE, device=device) for c in clips]
        vq02.encode([p.tokenizer_wav for p in ready])
        vq06.encode([p.tokenizer_wav for p in ready])
        if speaker is not None:
            speaker.embed([p.wav16k for p in ready])
        else:
            [speaker_fbank(p.wav16k) for p in ready]

    w, r = args.warmup, args.repeats
    stages = {
        "prepare (validate, mono, 0.6 cap, resample 16k/24k, peak norm, trim)": timed(
            lambda: [prepare_audio(c, INPUT_RATE, device=device) for c in clips], device, w, r
        )[0],
        "vq02 front end (fbank + LFR + CMVN)": timed(lambda: [vq02.features(t) for t in tok_wavs], device, w, r)[0],
        f"vq02 total (front end + {vq02.encoder.cfg.num_blocks}-block streaming encoder + codes)": timed(
            lambda: vq02.encode(tok_wavs), device, w, r
        )[0],
        "vq06 (log-mel + S3 tokenizer)": timed(lambda: vq06.encode(tok_wavs), device, w, r)[0],
        f"speaker: {speaker_note}": timed(speaker_stage, device, w, r)[0],
        "whole front end": timed(whole, device, w, r)[0],
    }
    n02 = [c.shape[0] for c in vq02.encode(tok_wavs)]
    n06 = [c.shape[0] for c in vq06.encode(tok_wavs)]
    return {
        "clip_seconds": args.seconds,
        "clips_per_call": args.batch,
        "input": f"{INPUT_RATE} Hz stereo synthetic speech",
        "tokenizer_wav_samples": tok_wavs[0].shape[0],
        "vq02_codes": n02[0],
        "vq06_codes": n06[0],
        "device": device_description(device),
        "dtype": args.dtype,
        "dims": {
            "paraformer": TINY_PARAFORMER if args.tiny else FULL_PARAFORMER,
            "s3tokenizer": dict(vq06.model.config.__dict__),
            "tiny": args.tiny,
        },
        "speaker": speaker_note,
        "stages": stages,
    }


def markdown(result: dict) -> str:
    lines = [
        f"### Audio front end, {result['clip_seconds']:g} s clip x {result['clips_per_call']} "
        f"({result['device']['name']}, torch {result['device']['torch']}, {result['dtype']})",
        "",
        f"Input: {result['input']}; {result['vq02_codes']} vq02 + {result['vq06_codes']} vq06 codes per clip. "
        f"{'TINY dims (smoke test).' if result['dims']['tiny'] else 'Full official dims, random weights.'}",
        "",
        "| stage | median ms | min ms |",
        "|---|---:|---:|",
    ]
    for name, t in result["stages"].items():
        lines.append(f"| {name} | {t['median_ms']:.1f} | {t['min_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="vq02/vq06 weights (official: fp32)"
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=1, help="clips per call (all batched together)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--campplus", type=Path, help="path to the real campplus.onnx (else only its fbank is timed)")
    parser.add_argument("--campplus-cuda", action="store_true", help="run CAM++ with the CUDA provider (official: CPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny dims on CPU: a quick smoke test")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.device, args.warmup, args.repeats = "cpu", 1, min(args.repeats, 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not math.isfinite(args.seconds) or args.seconds <= 0:
        parser.error("--seconds must be positive")
    result = run(args)
    table = markdown(result)
    sys.stdout.write(table)
    write_report(result, table, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
