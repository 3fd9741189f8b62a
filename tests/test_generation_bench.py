"""The generation benchmark script runs end to end in its tiny CPU mode (keeps bench/ from rotting)."""

from __future__ import annotations

import json


def test_bench_generation_tiny_smoke(tmp_path, load_bench):
    bench = load_bench("bench_generation")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    results = bench.main(["--tiny", "--batch-sizes", "1,3", "--new-tokens", "7", "--eager-new-tokens", "4",
                          "--out", str(out_json), "--markdown", str(out_md)])
    report = json.loads(out_json.read_text())
    rows = {(r["path"].split(" ")[0], r["batch_size"]) for r in report["results"]}
    assert rows == {("fast", 1), ("fast", 3), ("plain", 1), ("plain", 3)}
    assert all(r.error is None and r.tokens_per_s_total > 0 for r in results)
    fast3 = next(r for r in results if r.path.startswith("fast") and r.batch_size == 3)
    assert fast3.generated_tokens == 3 * 7  # the zeroed <|EOT|> row never wins: every row runs to its cap
    assert "| path | batch |" in out_md.read_text()


def test_bench_generation_compares_the_prefill_gqa_modes(tmp_path, load_bench):
    """--compare-prefill-gqa: expanded K/V first, then the folded query heads, same ids per batch size."""
    bench = load_bench("bench_generation")
    results = bench.main(["--tiny", "--batch-sizes", "1,3", "--new-tokens", "5", "--eager-new-tokens", "0",
                          "--compare-prefill-gqa", "--out", str(tmp_path / "r.json")])
    assert [(r.path.split(" (")[0], r.batch_size) for r in results] == [
        ("fast, prefill on expanded K/V", 1), ("fast, prefill with folded query heads", 1),
        ("fast, prefill on expanded K/V", 3), ("fast, prefill with folded query heads", 3)]
    assert [r.same_tokens_as_previous for r in results] == [None, True, None, True]


def test_a_comparison_row_with_its_own_kernels_gets_a_fresh_session(load_bench):
    """A row after a pinned one with the same options must not inherit the pinned kernels (it times its own)."""
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import DecodeOptions

    bench = load_bench("bench_generation")
    model = bench.random_step1(bench.TINY_DIMS, torch.device("cpu"), torch.float32, "sdpa", 0)
    pinned = {1: {"qkv": "stand-in choice"}}
    first = bench.session_for(model, DecodeOptions(pdl=True), pinned)
    assert first._linear_choice == pinned
    again = bench.session_for(model, DecodeOptions(pdl=True), None)
    assert again is not first and again._linear_choice == {}
    assert bench.session_for(model, None, None) is again


def test_bench_generation_compares_the_persistent_layer_kernel(tmp_path, load_bench):
    """--compare-persistent: the persistent kernel, the five launches with its kernels, then the default step,
    per batch size, with same-ids checks against the first row (on the CPU every row runs the plain step)."""
    bench = load_bench("bench_generation")
    results = bench.main(["--tiny", "--batch-sizes", "1,3", "--new-tokens", "5", "--eager-new-tokens", "0",
                          "--compare-persistent", "--out", str(tmp_path / "r.json")])
    labels = ["fast, one persistent launch per layer", "fast, five launches per layer, same kernels",
              "fast, five launches per layer (default)"]
    assert [(r.path.split(" (static")[0], r.batch_size) for r in results] == [
        (label, rows) for rows in (1, 3) for label in labels]
    assert all(r.error is None and r.generated_tokens == 5 * r.batch_size for r in results)
    assert [r.same_tokens_as_previous for r in results] == [None, True, True] * 2
