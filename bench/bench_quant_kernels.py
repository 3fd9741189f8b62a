"""Every decode-matmul candidate per role, bf16 vs int8 vs int4, timed as the decode session times them.

A full-width random Step1 with a few layers (enough that one pass over a role's matrices does not fit in
L2), its projections fused as the decode session fuses them (quantized ones laid out for the interleaved
kernels), every candidate of ``decode_linears.time_candidates`` at batch 1 and 16; and, for int4, PyTorch's
``_weight_int4pack_mm`` (tinygemm, group 128) on the same weights: the matmul alone, after checking it
computes exactly dequantize-then-matmul's values (symmetric int4 as tinygemm's ``(q - 8) * scale + 0``).

    python bench/bench_quant_kernels.py --json kernels.json --markdown kernels.md
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import (
    ROLES,
    _graph_seconds,
    time_candidates,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import fuse_step1_projections
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import linear as quant_linear
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import quantize_step1_
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import tinygemm
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import unpack

from bench_common import device_description, random_step1, write_report

logger = logging.getLogger("bench_quant_kernels")

LAYERS = 16  # every role beyond the H200's 60 MB L2 (int4 o: 16 x 4.8 MB; 8 layers left it in L2)
VARIANTS: tuple[tuple[str, int | None], ...] = (("bf16", None), ("int8", 8), ("int4", 4))
TINYGEMM_INNER_K_TILES = 8
TINYGEMM_MIDPOINT = 8  # tinygemm's w = (q - 8) * scale + zero


def matrices(weights) -> dict:
    return {"qkv": weights.qkv, "o": weights.o, "gate_up": weights.gate_up, "down": weights.down}


def tinygemm_rows(weights, rows: int) -> list[dict]:
    """``torch._weight_int4pack_mm`` per role: exactness against the dequantized weight, then its time."""
    found = []
    for role, mats in matrices(weights).items():
        packed = []
        for m in mats:
            q = unpack(m.stored_words(), 4).to(torch.int32) + TINYGEMM_MIDPOINT  # unsigned 0..15, column order
            n, k = q.shape
            as_bytes = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
            w = torch._convert_weight_to_int4pack(as_bytes, TINYGEMM_INNER_K_TILES)
            scales = m.scale.t().contiguous()  # [K / group, N]
            sz = torch.stack([scales, torch.zeros_like(scales)], dim=-1).contiguous()
            packed.append((w, sz, m))
        x = torch.randn(rows, mats[0].shape[1], device=weights.embed.device, dtype=weights.embed.dtype)
        w, sz, m = packed[0]
        got = torch._weight_int4pack_mm(x, w, m.scheme.group_size, sz).float()
        want = x.float() @ m.dequantized(x.dtype).float().T
        rel = float((got - want).norm() / want.norm())
        seconds = _graph_seconds(lambda i, laid=packed: torch._weight_int4pack_mm(x, laid[i][0], m.scheme.group_size,
                                                                                  laid[i][1]), len(packed))
        found.append({"role": role, "rows": rows, "weights": "int4", "choice": "tinygemm _weight_int4pack_mm",
                      "us": seconds * 1e6, "rel_err_vs_dequant_matmul": rel})
        del packed
    return found


def run(args) -> dict:
    device = torch.device("cuda")
    if args.stored_int8:  # study: int8 in the stored layout (its layout before the group-major GEMV)
        quant_linear.INTERLEAVED_BITS = (4,)
    if args.no_tinygemm:  # study: int4 down on our kernels instead of tinygemm
        tinygemm.eligible = lambda *_: False
    dims = {"num_hidden_layers": LAYERS}
    report: dict = {"device": device_description(device), "layers": LAYERS, "rows": []}
    for name, bits in VARIANTS:
        if name not in args.variants:
            continue
        model = random_step1(dims, device, torch.bfloat16, "sdpa", seed=0)
        if bits is not None:
            quantize_step1_(model, bits)
        weights = fuse_step1_projections(model)
        sizes = {role: (m[0].shape, sum(t.numel() * t.element_size() for t in (
            (m[0].packed, m[0].scale) if bits else (m[0],)))) for role, m in matrices(weights).items()}
        for rows in args.rows:
            timings = time_candidates(weights, rows, "auto")
            for role in ROLES:
                best = min(timings[role], key=timings[role].get)
                for choice, seconds in sorted(timings[role].items(), key=lambda item: item[1]):
                    report["rows"].append({"role": role, "rows": rows, "weights": name, "choice": str(choice),
                                           "us": seconds * 1e6, "best": choice == best,
                                           "tb_per_s": sizes[role][1] / seconds / 1e12})
                logger.info("%s batch %d %s: best %s %.1f us", name, rows, role, best, timings[role][best] * 1e6)
            if bits == 4:
                try:
                    report["rows"] += tinygemm_rows(weights, rows)
                except Exception as exc:  # noqa: BLE001 - report what this torch build refuses
                    report.setdefault("tinygemm_error", f"{type(exc).__name__}: {exc}")
        del model, weights
        gc.collect()
        torch.cuda.empty_cache()
    return report


def markdown(report: dict) -> str:
    d = report["device"]
    lines = [f"### Decode matmuls per role ({d.get('name', d['device'])}, torch {d['torch']}, triton {d['triton']}, "
             f"{d['date']}; {report['layers']} layers cycled, graph-replayed)", "",
             "| batch | role | weights | fastest choice | us | TB/s of weights |", "|---:|---|---|---|---:|---:|"]
    for r in report["rows"]:
        if r.get("best") or "tinygemm" in r["choice"]:
            extra = f" (rel. err {r['rel_err_vs_dequant_matmul']:.1e})" if "rel_err_vs_dequant_matmul" in r else ""
            tb = f"{r['tb_per_s']:.2f}" if "tb_per_s" in r else ""
            lines.append(f"| {r['rows']} | {r['role']} | {r['weights']} | {r['choice']}{extra} | {r['us']:.1f} "
                         f"| {tb} |")
    if report.get("tinygemm_error"):
        lines += ["", f"tinygemm: {report['tinygemm_error']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--variants", nargs="+", default=["int8", "int4"], choices=[v[0] for v in VARIANTS])
    parser.add_argument("--stored-int8", action="store_true", help="keep int8 in the stored layout (its kernels)")
    parser.add_argument("--no-tinygemm", action="store_true", help="int4 down on the Triton kernels, not tinygemm")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    report = run(args)
    text = markdown(report)
    write_report(report, text, args.json, args.markdown)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
