"""The decoder benchmark script runs end to end in its tiny CPU mode (keeps bench/ from rotting), the per-length
costs included."""

from __future__ import annotations

import json


def test_bench_decoder_tiny_smoke(tmp_path, load_bench):
    bench = load_bench("bench_decoder")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    rc = bench.main(["--tiny", "--batch", "1", "2", "--dtypes", "fp32", "bf16", "--seconds", "0.36",
                     "--prompt-seconds", "0.24", "--warmup", "0", "--repeats", "1", "--attn-check",
                     "--new-lengths", "2", "--json", str(out_json), "--markdown", str(out_md)])
    assert rc == 0
    report = json.loads(out_json.read_text())
    runs = {(r["batch"], r["dtype"]) for r in report["runs"]}
    assert runs == {(1, "fp32"), (1, "bf16"), (2, "fp32"), (2, "bf16")}
    bf16 = next(r for r in report["runs"] if r["dtype"] == "bf16")
    assert 0 < bf16["error_vs_fp32"]["flow_mel"]["mean_abs"] < 0.1
    eager = next(r for r in report["attn_check"] if r["backend"] == "eager")
    assert eager["mel_vs_sdpa"]["max_abs"] < 1e-4
    assert "| B | dtype |" in out_md.read_text()
    fresh = bf16["new_length"]
    assert fresh["lengths"] == 2 and all(fresh[k] > 0 for k in ("flow_new_ms", "flow_again_ms", "hift_new_ms",
                                                                   "hift_again_ms"))
    assert "flow ms new / again" in out_md.read_text()
