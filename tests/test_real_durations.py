"""The clone token cap against real recordings: it must never cut real speech short, nor be absurdly large.

``bench/data/real_utterances.tsv`` holds real utterances (English, Mandarin, Japanese, Korean) with the clip
duration measured by the corpus manifests named in the file. A clone of a row's text needs
``ceil(duration_s * AUDIO_TOKENS_PER_SECOND)`` audio ids; ``estimate_clone_tokens(text)`` must be at least that.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TABLE_MODULE = Path(__file__).resolve().parents[1] / "bench" / "utterance_table.py"

MIN_ROWS = 60
REQUIRED_LANGUAGES = {"en", "zh", "ja", "ko"}
SHORT_CLIP_S = 3.0  # the table must hold clips shorter than this ...
LONG_CLIP_S = 15.0  # ... and longer than this
# A cap above this multiple of the real need, for clips longer than CAP_CHECK_MIN_S, wastes the context.
# Real reading rates span ~60-280 words/min (4.5x), and a text-only estimate must cover the slowest
# reader, so the fastest speakers (Emilia's spontaneous speech) sit near 3.6x: 4x is the honest bound.
MAX_CAP_RATIO = 4.0
CAP_CHECK_MIN_S = 3.0


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("bench_utterance_table", TABLE_MODULE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def budgets(table):
    return table.budget_table()


def _report(table, rows) -> str:
    return "\n".join(table.describe(b) for b in sorted(rows, key=lambda b: b.ratio))


def test_table_is_large_and_diverse(budgets):
    assert len(budgets) >= MIN_ROWS
    assert REQUIRED_LANGUAGES <= {b.utterance.language for b in budgets}
    durations = [b.duration_s for b in budgets]
    assert min(durations) < SHORT_CLIP_S and max(durations) > LONG_CLIP_S
    keys = [(b.utterance.corpus, b.utterance.utterance_id) for b in budgets]
    assert len(set(keys)) == len(keys), "an utterance is listed twice"
    assert all(b.utterance.source.strip() for b in budgets), "every row names the file its duration comes from"


def test_clone_cap_never_truncates_real_speech(table, budgets):
    summary = table.summarize(budgets)
    truncated = [b for b in budgets if b.truncated]
    assert not truncated, (
        f"estimate_clone_tokens truncates {len(truncated)} of {summary.rows} real utterances "
        f"(truncation rate {summary.truncation_rate:.1%}, worst estimate/needed {summary.min_ratio:.3f}):\n"
        + _report(table, truncated)
    )
    assert summary.min_ratio >= 1.0, f"worst estimate/needed ratio {summary.min_ratio:.3f}"


def test_clone_cap_is_not_absurd(table, budgets):
    long_rows = [b for b in budgets if b.duration_s > CAP_CHECK_MIN_S]
    too_large = [b for b in long_rows if b.ratio > MAX_CAP_RATIO]
    worst = max(b.ratio for b in long_rows)
    assert not too_large, (
        f"the clone cap exceeds {MAX_CAP_RATIO}x the real need for {len(too_large)} clips over "
        f"{CAP_CHECK_MIN_S} s (worst ratio {worst:.3f}):\n" + _report(table, too_large)
    )


@pytest.mark.parametrize(
    ("seconds", "tokens"),
    [(0.12, 5), (0.121, 6), (1.0, 42), (3.0, 125), (30.0, 1250)],
)
def test_needed_tokens_is_ceil_of_seconds_times_rate(table, seconds, tokens):
    assert table.needed_tokens(seconds) == tokens


def test_budget_flags_truncation_from_the_numbers(table):
    utterance = table.Utterance("c", "u", "en", 6.56, "Yes.", "s")
    short = table.UtteranceBudget(utterance, needed_tokens=274, estimate_tokens=270)
    enough = table.UtteranceBudget(utterance, needed_tokens=274, estimate_tokens=274)
    assert short.truncated and short.ratio == pytest.approx(270 / 274)
    assert not enough.truncated and enough.ratio == 1.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# comment only\n", "header"),
        ("corpus\ttext\n", "header"),
        ("corpus\tutterance_id\tlanguage\tduration_s\ttext\tsource\nc\tu\ten\t1.0\thello\n", "fields"),
        ("corpus\tutterance_id\tlanguage\tduration_s\ttext\tsource\nc\tu\ten\tlong\thello\ts\n", "not a number"),
        ("corpus\tutterance_id\tlanguage\tduration_s\ttext\tsource\nc\tu\ten\t0\thello\ts\n", "positive"),
    ],
)
def test_malformed_table_is_rejected(table, tmp_path, content, message):
    path = tmp_path / "t.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(table.UtteranceTableError, match=message):
        table.load_utterances(path)
