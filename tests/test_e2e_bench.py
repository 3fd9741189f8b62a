"""The end-to-end benchmark runs in its tiny CPU mode and reports every number the docs quote."""

from __future__ import annotations

import json


def test_bench_e2e_tiny_smoke(tmp_path, load_bench):
    bench = load_bench("bench_e2e")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert bench.main(["--tiny", "--batch", "3", "--fixed-cap", "60", "--models", str(tmp_path / "models"),
                       "--json", str(out_json), "--markdown", str(out_md)]) == 0
    report = json.loads(out_json.read_text())
    cases = {c["case"]: c for c in report["cases"]}
    assert len(cases) == 4 and report["load_s"] > 0
    assert cases["2 s edit, 50 new tokens, again"]["generated"] == 50  # never-stop model: runs to its cap
    fixed = cases["2 s edit, fixed cap 60"]
    assert fixed["generated"] == fixed["cap"] == 60
    dynamic = cases["2 s edit, dynamic cap"]
    assert dynamic["generated"] == dynamic["cap"] > 50  # the estimator leaves room above the input length
    batch = report["batch"]
    assert batch["clips"] == 3 and len(batch["generated_per_clip"]) == 3
    assert batch["same_tokens_as_sequential"] is True and min(batch["generated_per_clip"]) > 0
    for key in ("sequential_stages", "batched_stages"):  # the stage shares add up to real time
        stages = batch[key]
        assert set(stages) == set(bench.STAGES) and stages["decode_s"] > 0 and stages["flow_s"] > 0
        assert sum(stages.values()) <= (batch["sequential_s"] if key.startswith("seq") else batch["batched_s"])
    assert report["truncation"]["truncated"] == 0
    text = out_md.read_text()
    assert "| batch_edit stage |" in text and "sequential edit calls" in text


def test_bench_e2e_compares_the_persistent_layer_kernel(tmp_path, load_bench):
    """--compare-persistent: the edit and batch_edit with five launches per layer, then with the persistent kernel
    (on the CPU both run the plain step), the sequential side once, and whether the ids agree."""
    bench = load_bench("bench_e2e")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert bench.main(["--tiny", "--batch", "2", "--compare-persistent", "--models", str(tmp_path / "models"),
                       "--json", str(out_json), "--markdown", str(out_md)]) == 0
    report = json.loads(out_json.read_text())
    before, after = (report["modes"][label] for _, label in bench.COMPARISONS["persistent"])
    assert len(before["cases"]) == len(after["cases"]) == 2
    assert [c["tokens"] for c in before["cases"]] == [c["tokens"] for c in after["cases"]]
    assert before["batch"]["tokens"] == after["batch"]["tokens"]
    assert "sequential_s" not in before["batch"] and after["batch"]["same_tokens_as_sequential"] is True
    assert "long edit True, batch_edit True" in out_md.read_text()
