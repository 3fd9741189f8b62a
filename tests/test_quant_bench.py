"""bench/bench_quant.py --tiny on the CPU: every part runs and reports numbers that can be checked."""

from __future__ import annotations

import json


def test_quant_bench_tiny_reports_every_part(load_bench, tmp_path, parity):
    bench = load_bench("bench_quant")
    out = tmp_path / "quant.json"
    assert bench.main(["--tiny", "--device", "cpu", "--parts", "decode,drift,parity", "--parity-dir",
                       str(parity.root), "--json", str(out), "--markdown", str(tmp_path / "quant.md")]) == 0
    report = json.loads(out.read_text())
    decode = report["decode"]
    assert [(r["weights"], r["batch_size"]) for r in decode] == [(w, b) for w in ("bf16", "int8", "int4") for b in (1, 4)]
    assert all(r["error"] is None and r["tokens_per_s_total"] > 0 for r in decode)
    sizes = {r["weights"]: r["weight_gb"] for r in decode}
    assert sizes["int4"] < sizes["int8"] < sizes["bf16"]
    drift = {r["weights"]: r for r in report["drift"]}
    assert drift["int8"]["logits_rel_l2"] < drift["int4"]["logits_rel_l2"] < 1.0
    parity_rows = {r["weights"]: r for r in report["parity"]}
    assert parity_rows["as stored"]["logits_rel_l2"] < 1e-4 and parity_rows["as stored"]["greedy_same_prefix"] == 20
    assert parity_rows["int8"]["logits_rel_l2"] < parity_rows["int4"]["logits_rel_l2"]
    assert "| int4 |" in (tmp_path / "quant.md").read_text()
