"""Step1 generation benchmark: plain cached loop vs the fast path, full-size random weights.

For each batch size (default 1, 4, 8, 16): B prompts of ``--prompt-tokens`` ids (default 1,300), each
generating ``--new-tokens`` ids with the current official sampling (T 0.7 alone, plus the audio constraint;
``--original-sampling``: the first official path's top-k 50 and repetition guard too). Reports prefill
seconds, decode tokens/s per row and in total, ms per step, the weights' read rate, peak GPU memory, and
the warm-up paid by the first call (graph capture and kernel selection). The eager baseline
(``fast=False``: left-padded batch, DynamicCache, the model's forward per token) runs
``--eager-new-tokens`` steps. ``--prefill-study`` times one prompt's prefill under each SDPA kernel choice
at fresh lengths (cuDNN builds an execution plan per new shape).

The <|EOT|> row of the random lm_head is zeroed and the audio rows scaled up, so rows run to their cap
(the timing is then per token, not per lucky early stop).

``--baseline-remote-code DIR`` (opt-in, clearly separate): loads the OFFICIAL hub remote code from a model
folder you downloaded (``trust_remote_code=True``, executing that folder's Python files: only for a folder
you trust) and times its greedy ``generate()`` on the same prompt length, so the ratio to this pack's paths
can be read off. Nothing else in the pack ever executes downloaded code.

``--compare-pdl`` times the fast path twice per batch size in one process: first with the decode kernels
launched plainly (the path before programmatic dependent launch), then with PDL (``lm/triton_pdl``) running
the same matmul kernels as the plain launch (the PDL effect alone: the ids must be identical), then with PDL
and its own timed kernel choice (the shipped default; other kernels sum in another order, so bf16 ids may
differ). Each PDL row says whether its ids equal the plain launch's. ``--compare-merge`` does the same for
the attention merge reading its partials ahead (``DecodeOptions.merge_ahead``; the same arithmetic, so with
the same matmul kernels the ids must be identical). ``--compare-prefill-gqa`` runs the prefill's SDPA on K/V
expanded to every query head (before), then with a KV group's query heads folded onto the query axis (the
default; bit for bit the same attention, so the ids must be identical): the prefill seconds show the gain.
``--compare-persistent`` (1-16 rows): each layer as one persistent launch (``DecodeOptions(persistent=True)``),
then the five launches per layer with the same matmul configurations (the ids must be identical), then the
default session with its own timed kernels.

    python bench/bench_generation.py --out gen.json --markdown gen.md          # GPU, full size
    python bench/bench_generation.py --tiny --out /tmp/gen_tiny.json          # CPU smoke check (seconds)
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from comfyui_step_audio_editx.engines.step_audio_editx.constants import (
    TEXT_VOCAB_SIZE,
    VQ02_FIRST_ID,
    VQ06_LAST_ID,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import (
    GenerationOutput,
    generate,
    get_decode_session,
    release_decode_session,
)
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import (
    choose_dtype,
    dtype_kwargs,
    resolve_attn_implementation,
    resolve_device,
)
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig

from bench_common import BYTES_PER_GIB, device_description, random_step1, sync, write_report

logger = logging.getLogger("bench_generation")

TINY_DIMS = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 8, "num_attention_groups": 2,
             "num_hidden_layers": 2, "vocab_size": TEXT_VOCAB_SIZE}
FULL_RUN = {"prompt_tokens": 1300, "new_tokens": 512, "eager_new_tokens": 32, "batch_sizes": (1, 4, 8, 16)}
TINY_RUN = {"prompt_tokens": 40, "new_tokens": 12, "eager_new_tokens": 6, "batch_sizes": (1, 4)}
AUDIO_HEAD_SCALE = 8.0  # random audio logits far above the zeroed <|EOT|> logit: rows run to their cap
PREFILL_STUDY_LENGTHS = (1300, 1301, 1317, 1300)


@dataclass
class RunResult:
    path: str
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    generated_tokens: int
    first_call_s: float | None = None
    warmup_s: float | None = None
    prefill_s: float | None = None
    decode_s: float | None = None
    tokens_per_s_per_row: float | None = None
    tokens_per_s_total: float | None = None
    ms_per_step: float | None = None
    weights_tb_per_s: float | None = None
    peak_memory_gib: float | None = None
    same_tokens_as_previous: bool | None = None
    error: str | None = None


def random_prompts(batch: int, length: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VQ06_LAST_ID + 1, (length,), generator=gen).tolist() for _ in range(batch)]


def time_call(model, prompts, new_tokens: int, config: SamplingConfig, fast: bool, device: torch.device,
              weight_bytes: int, label: str, keep: list | None = None) -> RunResult:
    batch = len(prompts)
    result = RunResult(path=label, batch_size=batch, prompt_tokens=len(prompts[0]), new_tokens=new_tokens,
                       generated_tokens=0)
    seeds = list(range(batch))
    try:
        start = time.perf_counter()
        first = generate(model, prompts, [new_tokens] * batch, config, seeds, fast=fast)
        sync(device)
        result.first_call_s = time.perf_counter() - start
        result.warmup_s = first[0].warmup_s
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        outputs: list[GenerationOutput] = generate(model, prompts, [new_tokens] * batch, config, seeds, fast=fast)
    except Exception as exc:  # one failing configuration must not hide the others
        logger.exception("%s at batch %d failed", label, batch)
        result.error = f"{type(exc).__name__}: {exc}"[:500]
        return result
    if keep is not None:
        keep.append([o.tokens for o in outputs])
    steps = max(o.n_generated + (o.stop_reason.value == "eos") for o in outputs) - 1  # the first id: prefill
    result.generated_tokens = sum(o.n_generated for o in outputs)
    result.prefill_s = outputs[0].prefill_s
    result.decode_s = outputs[0].decode_s
    decoded = result.generated_tokens - batch  # ids chosen by decode steps (the first comes from prefill)
    result.tokens_per_s_total = decoded / result.decode_s
    result.tokens_per_s_per_row = result.tokens_per_s_total / batch
    result.ms_per_step = result.decode_s * 1e3 / max(steps, 1)
    result.weights_tb_per_s = weight_bytes / (result.ms_per_step / 1e3) / 1e12
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB
    return result


def prefill_study(model, device: torch.device, seed: int) -> list[dict]:
    """One prompt's prefill at fresh lengths under each SDPA choice (cuDNN plans are built per shape)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    decoder = model.model
    choices = [("sdpa default, enable_gqa", "enable_gqa", None), ("sdpa default, folded heads", "fold", None),
               ("sdpa default, expanded K/V (before)", "expand", None),
               ("sdpa pinned EFFICIENT, folded heads", "fold", [SDPBackend.EFFICIENT_ATTENTION]),
               ("sdpa pinned CUDNN, enable_gqa", "enable_gqa", [SDPBackend.CUDNN_ATTENTION]),
               ("sdpa pinned MATH, folded heads", "fold", [SDPBackend.MATH])]
    rows = []
    saved = (model.config._attn_implementation, decoder.sdpa_gqa)
    model.set_attn_implementation("sdpa")
    for offset, (label, gqa, backends) in enumerate(choices):
        decoder.sdpa_gqa = gqa
        times = []
        for i, length in enumerate(PREFILL_STUDY_LENGTHS):
            length += 2 * offset if i < len(PREFILL_STUDY_LENGTHS) - 1 else 0  # fresh shapes, then a repeat
            ids = torch.tensor(random_prompts(1, length, seed + i)[0], device=device)[None]
            try:
                with torch.inference_mode():
                    sync(device)
                    start = time.perf_counter()
                    if backends is None:
                        decoder(ids, use_cache=False)
                    else:
                        with sdpa_kernel(backends):
                            decoder(ids, use_cache=False)
                    sync(device)
                times.append(round((time.perf_counter() - start) * 1e3, 1))
            except Exception as exc:
                times.append(f"failed: {type(exc).__name__}")
                break
        rows.append({"choice": label, "lengths": list(PREFILL_STUDY_LENGTHS), "ms": times})
        logger.info("prefill %s: %s ms", label, times)
    model.set_attn_implementation(saved[0])
    decoder.sdpa_gqa = saved[1]
    return rows


def profile_fast_path(model, device: torch.device, config: SamplingConfig, batch: int, prompt_tokens: int,
                      new_tokens: int, seed: int, rows: int = 30) -> str:
    """Kernel time table (torch.profiler, CUDA activity) of one fast call: where a decode step goes."""
    from torch.profiler import ProfilerActivity, profile

    prompts = random_prompts(batch, prompt_tokens, seed)
    generate(model, prompts, [new_tokens] * batch, config, list(range(batch)))  # warm
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        generate(model, prompts, [new_tokens] * batch, config, list(range(batch)))
    averages = prof.key_averages()
    for key in ("device_time_total", "cuda_time_total"):
        try:
            return averages.table(sort_by=key, row_limit=rows, max_name_column_width=70)
        except Exception:  # older / newer torch spell the column differently
            continue
    return averages.table(row_limit=rows)


def remote_code_baseline(folder: Path, prompt_tokens: int, new_tokens: int, device: torch.device,
                         dtype: torch.dtype, seed: int) -> RunResult:
    """OPT-IN: the official hub remote code (executes the folder's modeling_step1.py). Greedy generate()."""
    from transformers import AutoModelForCausalLM

    logger.warning("Loading %s with trust_remote_code=True: this executes the folder's Python files", folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True, **dtype_kwargs(dtype))
    model = model.to(device).eval()
    ids = torch.tensor(random_prompts(1, prompt_tokens, seed)[0], device=device)[None]
    result = RunResult(path="official remote code (greedy generate)", batch_size=1, prompt_tokens=prompt_tokens,
                       new_tokens=new_tokens, generated_tokens=new_tokens)
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=2)
        sync(device)
        start = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=1)
        sync(device)
        result.prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens)
        sync(device)
    total = time.perf_counter() - start
    result.generated_tokens = out.shape[1] - ids.shape[1]
    result.decode_s = max(total - result.prefill_s, 1e-9)
    result.tokens_per_s_total = result.tokens_per_s_per_row = (result.generated_tokens - 1) / result.decode_s
    del model
    return result


def markdown_table(results: list[RunResult]) -> str:
    def fmt(value, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["| path | batch | new tokens | prefill s | decode tok/s per row | decode tok/s total | ms/step "
             "| weights TB/s | peak GiB | first call s (warm-up s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.path} | {r.batch_size} | failed: {r.error[:80]} | | | | | | | |")
            continue
        lines.append(f"| {r.path} | {r.batch_size} | {r.new_tokens} | {fmt(r.prefill_s, 3)} "
                     f"| {fmt(r.tokens_per_s_per_row, 1)} | {fmt(r.tokens_per_s_total, 1)} | {fmt(r.ms_per_step, 2)} "
                     f"| {fmt(r.weights_tb_per_s, 2)} | {fmt(r.peak_memory_gib, 2)} "
                     f"| {fmt(r.first_call_s, 1)} ({fmt(r.warmup_s, 1)}) |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny dims and lengths: a CPU smoke check in seconds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--attn", default="auto", help="attention backend of the prefill and the plain path")
    parser.add_argument("--batch-sizes", default="")
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--eager-new-tokens", type=int, default=None, help="steps of the plain loop (0: skip it)")
    parser.add_argument("--greedy", action="store_true", help="greedy instead of the official sampling settings")
    parser.add_argument("--original-sampling", action="store_true",
                        help="the first official path's sampling (T 0.7, top-k 50, repetition guard) instead of the "
                             "current one (T 0.7 alone); the tables in docs/performance.md of 2026-11-25 used it")
    parser.add_argument("--linear", default="auto", choices=("auto", "cublas", "triton"),
                        help="decode matmuls: time both per matrix (auto), or force one")
    parser.add_argument("--prefill-study", action="store_true")
    parser.add_argument("--compare-pdl", action="store_true",
                        help="time the fast path with programmatic dependent launch off, then on, per batch size")
    parser.add_argument("--compare-merge", action="store_true",
                        help="time the fast path with the attention merge reading one partial at a time (before), "
                             "then four ahead (same matmul kernels, then its own timed choice), per batch size")
    parser.add_argument("--compare-prefill-gqa", action="store_true",
                        help="time the prefill with K/V expanded to every head (before), then with the query heads "
                             "of a KV group folded onto the query axis (same kernels), per batch size")
    parser.add_argument("--compare-persistent", action="store_true",
                        help="the persistent layer kernel, the plain step with its kernels, the default step")
    parser.add_argument("--profile", default="", help="comma list of batch sizes whose fast call is profiled")
    parser.add_argument("--baseline-remote-code", type=Path, default=None,
                        help="OPT-IN: an official model folder whose remote code is loaded and timed "
                             "(trust_remote_code=True executes its Python files)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("generation_bench.json"))
    parser.add_argument("--markdown", type=Path, default=None)
    return parser.parse_args(argv)


def _sampling_label(args) -> str:
    if args.greedy:
        return "greedy"
    return "T 0.7 top-k 50 + guard (first official path)" if args.original_sampling else "T 0.7 (current official)"


def comparison_modes(args) -> list[tuple[dict | None, str, bool, str | None]]:
    """(DecodeOptions fields or None for the default session, label, reuse the first row's matmul kernels, the
    prefill's ``sdpa_gqa`` mode or None for the default)."""
    if sum((args.compare_pdl, args.compare_merge, args.compare_prefill_gqa, args.compare_persistent)) > 1:
        raise SystemExit("--compare-pdl, --compare-merge, --compare-prefill-gqa and --compare-persistent are "
                         "separate runs")
    if args.compare_pdl:
        return [(dict(pdl=False), "fast, PDL off (before)", False, None),
                (dict(pdl=True), "fast, PDL on, same kernels as off", True, None),
                (dict(pdl=True), "fast, PDL on", False, None)]
    if args.compare_merge:
        return [(dict(merge_ahead=False), "fast, before (merge reads one partial at a time)", False, None),
                (dict(merge_ahead=True), "fast, merge reads ahead, same kernels", True, None),
                (dict(merge_ahead=True), "fast, merge reads ahead", False, None)]
    if args.compare_persistent:
        return [(dict(persistent=True), "fast, one persistent launch per layer", False, None),
                (dict(persistent=False), "fast, five launches per layer, same kernels", True, None),
                (dict(persistent=False), "fast, five launches per layer (default)", False, None)]
    if args.compare_prefill_gqa:
        return [(None, "fast, prefill on expanded K/V (before)", False, "expand"),
                (None, "fast, prefill with folded query heads", True, "fold")]
    return [(None, "fast", False, None)]


def session_for(model, options, pinned: dict | None):
    """The decode session a comparison row runs: the current one (``options`` None), else a fresh one with
    ``options``, which times its own matmul kernels unless ``pinned`` (the first row's choices) is given. A
    fresh session, because ``get_decode_session`` keeps a session whose options are unchanged, and with it the
    kernels an earlier row pinned."""
    if options is None:
        session = get_decode_session(model)
    else:
        release_decode_session(model)
        session = get_decode_session(model, options)
    if pinned is not None:
        session._linear_choice.update(pinned)
    return session


def main(argv: list[str] | None = None) -> list[RunResult]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = resolve_device(args.device)
    dtype = choose_dtype(device, args.dtype)
    dims, run = (TINY_DIMS, TINY_RUN) if args.tiny else ({}, FULL_RUN)
    prompt_tokens = args.prompt_tokens or run["prompt_tokens"]
    new_tokens = args.new_tokens or run["new_tokens"]
    eager_tokens = run["eager_new_tokens"] if args.eager_new_tokens is None else args.eager_new_tokens
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b] or list(run["batch_sizes"])
    if args.greedy:
        config = SamplingConfig(do_sample=False)
    else:
        config = SamplingConfig.original_path() if args.original_sampling else SamplingConfig()
    attn = resolve_attn_implementation(args.attn, "step1", device)
    info = device_description(device)
    model = random_step1(dims, device, dtype, attn, args.seed, never_stop=True, audio_head_scale=AUDIO_HEAD_SCALE)
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import DecodeOptions

    get_decode_session(model, DecodeOptions(linear=args.linear))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # what one decode step must read: every layer matrix, the norms, and the audio rows of the head
    step_bytes = weights - model.model.embed_tokens.weight.numel() * model.model.embed_tokens.weight.element_size()
    if config.constrain_audio:
        step_bytes -= model.lm_head.weight.numel() * model.lm_head.weight.element_size() * (
            1 - (VQ06_LAST_ID + 2 - VQ02_FIRST_ID) / model.config.vocab_size)
    logger.info("Generation bench on %s (%s), %s, %.2f GiB of weights, %.2f GiB read per step, attention %s",
                info["name"], device, dtype, weights / BYTES_PER_GIB, step_bytes / BYTES_PER_GIB, attn)
    results: list[RunResult] = []
    study = prefill_study(model, device, args.seed) if args.prefill_study and device.type == "cuda" else None
    modes = comparison_modes(args)
    for batch in batch_sizes:
        prompts = random_prompts(batch, prompt_tokens, args.seed + batch)
        kept: list = []
        first_choice: dict = {}
        for options, label, same_kernels, prefill_gqa in modes:
            model.model.sdpa_gqa = prefill_gqa
            session_for(model, None if options is None else DecodeOptions(linear=args.linear, **options),
                        first_choice if same_kernels else None)
            fast = time_call(model, prompts, new_tokens, config, True, device, step_bytes, label, kept)
            if not fast.error:
                fast.path = f"{label} ({get_decode_session(model).mode})"
            if len(modes) > 1 and len(kept) >= 2:
                fast.same_tokens_as_previous = kept[0] == kept[-1]
            if len(kept) == 1:
                first_choice = dict(get_decode_session(model)._linear_choice)
            logger.info("%s", fast)
            results.append(fast)
    profiles = {}
    for batch in [int(b) for b in args.profile.split(",") if b]:
        if device.type == "cuda":
            profiles[batch] = profile_fast_path(model, device, config, batch, prompt_tokens, 64, args.seed)
            logger.info("profile of a fast call at batch %d (64 new tokens):\n%s", batch, profiles[batch])
    if eager_tokens > 0:
        release_decode_session(model)  # give the plain loop the memory
        for batch in batch_sizes:
            prompts = random_prompts(batch, prompt_tokens, args.seed + batch)
            plain = time_call(model, prompts, eager_tokens, config, False, device, step_bytes, "plain (eager loop)")
            logger.info("%s", plain)
            results.append(plain)
    if args.baseline_remote_code is not None:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results.append(remote_code_baseline(args.baseline_remote_code, prompt_tokens, eager_tokens or 32, device,
                                            dtype, args.seed))
    table = markdown_table(results)
    compared = [f"{r.path} batch {r.batch_size}: {r.same_tokens_as_previous}" for r in results
                if r.same_tokens_as_previous is not None]
    if compared:
        table += f"\n\nSame tokens as the first row ({modes[0][1]}): " + ", ".join(compared)
    header = (f"Step1 generation ({'tiny' if args.tiny else 'full size'}, random weights "
              f"{weights / BYTES_PER_GIB:.2f} GiB, {str(dtype).removeprefix('torch.')}) on {info['name']} ({device}), "
              f"{info['date']}; prompt {prompt_tokens} tokens; sampling {_sampling_label(args)}"
              f", guard + audio constraint; torch {info['torch']}, transformers {info['transformers']}, "
              f"triton {info['triton']}")
    logger.info("%s\n\n%s\n", header, table)
    payload = {"header": header, "device": info, "dtype": str(dtype), "step_bytes": step_bytes,
               "weights_bytes": weights, "results": [asdict(r) for r in results], "prefill_study": study,
               "profiles": profiles}
    study_md = ""
    if study:
        study_md = "\n\nPrefill of one prompt (ms) at fresh lengths " + str(list(PREFILL_STUDY_LENGTHS)) + ":\n\n" + \
            "\n".join(f"- {row['choice']}: {row['ms']}" for row in study)
    write_report(payload, f"{header}\n\n{table}{study_md}\n", args.out, args.markdown)
    logger.info("Wrote %s", args.out)
    return results


if __name__ == "__main__":
    main()
