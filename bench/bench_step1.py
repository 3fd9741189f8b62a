"""Step1 forward / attention benchmark: full-size random weights, prefill then plain cached decode.

For every attention backend this machine can run: prefill a prompt (default 1,300 tokens), then decode
(default 256 new tokens) one token per forward through a transformers ``DynamicCache`` (the plain cached
path; the fast path has its own benchmark, ``bench_generation.py``), at batch 1 and 8. Reports prefill ms, decode
tokens/s (per row and total) and peak GPU memory as a markdown table, and writes JSON to ``--out``.

Weights are random (dims of the facts doc, section 2, or ``--tiny``) and created directly on the device in
the target dtype: no fp32 copy on the host. ``sdpa`` folds a KV group's query heads onto the query axis (the
default); ``--sdpa-gqa`` adds its other modes: K/V expanded to every head (the path before, same bits) and the
opt-in ``enable_gqa`` (cuDNN attention on Hopper, see ``lm.attention.default_sdpa_gqa``).

    python bench/bench_step1.py --out step1_bench.json --markdown step1_bench.md     # GPU, full size
    python bench/bench_step1.py --tiny --out /tmp/step1_tiny.json                    # CPU smoke check
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from comfyui_step_audio_editx.engines.step_audio_editx.constants import TEXT_VOCAB_SIZE
from comfyui_step_audio_editx.engines.step_audio_editx.lm.attention import (
    SDPA_GQA_MODES,
    default_sdpa_gqa,
    sdpa_supports_enable_gqa,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import (
    MODEL_BACKENDS,
    backend_unavailable_reason,
    choose_dtype,
    resolve_device,
)
from tqdm.auto import tqdm

from bench_common import BYTES_PER_GIB, device_description, random_step1, sync, write_report

logger = logging.getLogger("bench_step1")

# Full size = Step1Config's defaults (facts doc section 2); a tiny model for CPU smoke checks.
FULL_DIMS: dict = {}
TINY_DIMS = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 8, "num_attention_groups": 2,
             "num_hidden_layers": 2, "vocab_size": TEXT_VOCAB_SIZE}
FULL_RUN = {"prompt_tokens": 1300, "new_tokens": 256, "batch_sizes": (1, 8)}
TINY_RUN = {"prompt_tokens": 48, "new_tokens": 8, "batch_sizes": (1, 8)}
WARMUP_DECODE_STEPS = 3  # enough for a compiled backend to see a second key length and go dynamic
# Compiled FlexAttention recompiles per batch size and per phase (prefill, decode, dynamic decode); torch's
# default limit of 8 would silently send later runs to the unfused fallback.
DYNAMO_RECOMPILE_LIMIT = 64
DIM_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_attention_groups", "num_hidden_layers",
            "vocab_size")


@dataclass
class RunResult:
    backend: str
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prefill_ms: float | None = None
    decode_tokens_per_s_per_row: float | None = None
    decode_tokens_per_s_total: float | None = None
    decode_ms_per_step: float | None = None
    peak_memory_gib: float | None = None
    error: str | None = None


def run_once(model: Step1ForCausalLM, prompt: torch.Tensor, new_tokens: int, device: torch.device
             ) -> tuple[float, float]:
    """Prefill ``prompt`` [B, T] into a DynamicCache, then greedy-decode ``new_tokens`` one per forward.
    Returns (prefill seconds, decode seconds)."""
    from transformers.cache_utils import DynamicCache

    mask = torch.ones_like(prompt)
    cache = DynamicCache()
    sync(device)
    start = time.perf_counter()
    logits = model(prompt, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1).logits
    sync(device)
    prefill = time.perf_counter() - start
    ones = mask.new_ones(mask.shape[0], 1)
    start = time.perf_counter()
    for _ in range(new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, ones], dim=1)
        logits = model(token, attention_mask=mask, cache=cache, use_cache=True).logits
    sync(device)
    return prefill, time.perf_counter() - start


def bench_backend(model: Step1ForCausalLM, label: str, batch_size: int, prompt_tokens: int, new_tokens: int,
                  device: torch.device, seed: int) -> RunResult:
    result = RunResult(backend=label, batch_size=batch_size, prompt_tokens=prompt_tokens, new_tokens=new_tokens)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    prompt = torch.randint(0, model.config.vocab_size, (batch_size, prompt_tokens), generator=generator).to(device)
    try:
        with torch.inference_mode():
            run_once(model, prompt, WARMUP_DECODE_STEPS, device)  # compile / autotune / allocator warm-up
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            prefill, decode = run_once(model, prompt, new_tokens, device)
    except Exception as exc:  # one failing backend must not hide the others
        logger.exception("%s at batch %d failed", label, batch_size)
        result.error = f"{type(exc).__name__}: {exc}"[:500]
        return result
    result.prefill_ms = prefill * 1e3
    result.decode_ms_per_step = decode * 1e3 / new_tokens
    result.decode_tokens_per_s_per_row = new_tokens / decode
    result.decode_tokens_per_s_total = batch_size * new_tokens / decode
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB
    return result


def backend_variants(device: torch.device, sdpa_gqa: bool = False) -> list[tuple[str, str, str | None]]:
    """(label, attn_implementation, sdpa_gqa mode) for every Step1 backend this machine can run."""
    variants: list[tuple[str, str, str | None]] = []
    for name in MODEL_BACKENDS["step1"]:
        reason = backend_unavailable_reason(name, device)
        if reason is not None:
            logger.info("Skipping %s: %s", name, reason)
            continue
        default = default_sdpa_gqa(device) if name == "sdpa" else None
        variants.append((name, name, default))
        if name == "sdpa" and sdpa_gqa:
            variants += [(f"sdpa[{mode}]", name, mode) for mode in SDPA_GQA_MODES
                         if mode != default and (mode != "enable_gqa" or sdpa_supports_enable_gqa())]
    return variants


def markdown_table(results: list[RunResult]) -> str:
    def fmt(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["| backend | batch | prefill ms | decode tok/s per row | decode tok/s total | ms/step | peak GiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.backend} | {r.batch_size} | failed: {r.error[:80]} | | | | |")
            continue
        lines.append(f"| {r.backend} | {r.batch_size} | {fmt(r.prefill_ms, 1)} "
                     f"| {fmt(r.decode_tokens_per_s_per_row, 1)} | {fmt(r.decode_tokens_per_s_total, 1)} "
                     f"| {fmt(r.decode_ms_per_step, 2)} | {fmt(r.peak_memory_gib, 2)} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny dims and lengths: a CPU smoke check in seconds")
    parser.add_argument("--device", default="auto", help="auto (first GPU, else CPU), cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--backends", default="", help="comma list to limit the run (default: all available)")
    parser.add_argument("--batch-sizes", default="", help="comma list (default 1,8)")
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sdpa-gqa", action="store_true",
                        help="also run sdpa's other GQA modes (expanded K/V, enable_gqa)")
    parser.add_argument("--out", type=Path, default=Path("step1_bench.json"), help="JSON results")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table (with the device)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[RunResult]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = resolve_device(args.device)
    dtype = choose_dtype(device, args.dtype)
    dims, run = (TINY_DIMS, TINY_RUN) if args.tiny else (FULL_DIMS, FULL_RUN)
    prompt_tokens = args.prompt_tokens or run["prompt_tokens"]
    new_tokens = args.new_tokens or run["new_tokens"]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b] or list(run["batch_sizes"])
    variants = backend_variants(device, args.sdpa_gqa)
    if args.backends:
        wanted = {b.strip() for b in args.backends.split(",")}
        variants = [v for v in variants if v[0] in wanted or v[1] in wanted]
    if not variants:
        raise SystemExit("no attention backend to benchmark on this machine")

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), DYNAMO_RECOMPILE_LIMIT))
    info = device_description(device)
    info["sdpa_enable_gqa_supported"] = sdpa_supports_enable_gqa()
    dims = {key: getattr(Step1Config(**dims), key) for key in DIM_KEYS}
    logger.info("Step1 bench on %s (%s), %s, dims %s", info["name"], device, dtype, dims)
    model = random_step1(dims, device, dtype, variants[0][1], args.seed)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / BYTES_PER_GIB
    results: list[RunResult] = []
    with tqdm(total=len(variants) * len(batch_sizes), desc="Step1 bench", unit="run") as progress:
        for label, backend, gqa_mode in variants:
            model.set_attn_implementation(backend)
            model.model.sdpa_gqa = gqa_mode
            for batch_size in batch_sizes:
                result = bench_backend(model, label, batch_size, prompt_tokens, new_tokens, device, args.seed)
                logger.info("%s", result)
                results.append(result)
                progress.update()

    table = markdown_table(results)
    header = (f"Step1 ({'tiny' if args.tiny else 'full size'}, random weights {weights_gib:.2f} GiB, "
              f"{str(dtype).removeprefix('torch.')}) on {info['name']} ({device}); prompt {prompt_tokens} tokens, "
              f"{new_tokens} new tokens, plain DynamicCache decode, torch {info['torch']}, "
              f"transformers {info['transformers']}")
    logger.info("%s\n\n%s\n", header, table)
    payload = {"header": header, "device": info, "dtype": str(dtype), "dims": dims, "weights_gib": weights_gib,
               "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "results": [asdict(r) for r in results]}
    write_report(payload, f"{header}\n\n{table}\n", args.out, args.markdown)
    logger.info("Wrote %s", args.out)
    return results


if __name__ == "__main__":
    main()
