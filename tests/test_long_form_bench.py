"""The long-form benchmark runs in its tiny CPU mode and reports every number the docs quote."""

from __future__ import annotations

import json


def test_bench_long_form_tiny_smoke(tmp_path, load_bench, tiny_model_root):
    bench = load_bench("bench_long_form")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert bench.main(["--tiny", "--seconds", "32", "--cap", "50", "--device", "cpu", "--models", str(tiny_model_root),
                       "--json", str(out_json), "--markdown", str(out_md)]) == 0
    report = json.loads(out_json.read_text())
    edit = report["edit"]
    assert len(edit["pieces"]) == 2 and edit["batches"] == [2]  # 32 s: two pieces, one batch
    assert edit["pieces"][0][0] == 0 and edit["pieces"][-1][1] == 32.0
    assert all(b - a <= 30 for a, b in edit["pieces"])
    assert edit["generated"] == 2 * 50  # never-stop model, fixed cap per piece
    assert 0 < edit["transcribe_s"] and 0 < edit["pieces_batch_s"] < edit["wall_s"]
    assert abs(edit["transcribe_s"] + edit["pieces_batch_s"] + edit["cut_and_join_s"] - edit["wall_s"]) < 1e-6
    rtf = report["rtf"]
    assert [(r["clips"], r["clip_s"]) for r in rtf] == [(1, 32.0), (1, 30.0), (8, 30.0)]
    assert all(r["rtf"] == r["wall_s"] / (r["clips"] * r["clip_s"]) and r["tokens"] > 0 for r in rtf)
    text = out_md.read_text()
    assert "real-time factor" in text and "2 pieces" in text
