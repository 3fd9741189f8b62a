"""Real utterances with measured durations vs. the clone token cap: does ``estimate_clone_tokens`` truncate?

``bench/data/real_utterances.tsv`` lists real recordings (LibriSpeech, LibriSpeech-PC, LJSpeech, GigaSpeech,
Emilia, SpeechIO/CCTV, MagicData-RAMC, JSUT, KSS) with the transcript and the clip duration taken from a
public manifest (sources in the file). A clone of ``text`` needs ``ceil(duration_s * AUDIO_TOKENS_PER_SECOND)``
audio ids (41.67 per second); the row is truncated when ``estimate_clone_tokens(text)`` is smaller.

Used by ``tests/test_real_durations.py`` (the cap must never truncate) and by the end-to-end benchmark
(prints the truncation rate): ``python bench/utterance_table.py`` logs the worst rows and the summary.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from comfyui_step_audio_editx.engines.step_audio_editx.constants import AUDIO_TOKENS_PER_SECOND
from comfyui_step_audio_editx.engines.step_audio_editx.token_budget import estimate_clone_tokens

logger = logging.getLogger(__name__)

DEFAULT_TABLE = Path(__file__).resolve().parent / "data" / "real_utterances.tsv"
COLUMNS = ("corpus", "utterance_id", "language", "duration_s", "text", "source")
COMMENT_PREFIX = "#"
# duration * rate lands a hair above a whole number through float error (3 s -> 125.00000000000001);
# the slack keeps that from asking one token more than the recording holds.
_ROUNDING_SLACK = 1e-9
WORST_ROWS_LOGGED = 5


class UtteranceTableError(ValueError):
    """The utterance table is malformed (wrong header, column count, duration)."""


@dataclass(frozen=True)
class Utterance:
    """One real recording: its transcript and measured clip duration (seconds, silences included)."""

    corpus: str
    utterance_id: str
    language: str
    duration_s: float
    text: str
    source: str


@dataclass(frozen=True)
class UtteranceBudget:
    """The clone cap for one utterance against the tokens its real duration needs."""

    utterance: Utterance
    needed_tokens: int  # ceil(duration_s * AUDIO_TOKENS_PER_SECOND)
    estimate_tokens: int  # estimate_clone_tokens(text)

    @property
    def duration_s(self) -> float:
        return self.utterance.duration_s

    @property
    def ratio(self) -> float:
        """estimate / needed: below 1 the clone would be cut off."""
        return self.estimate_tokens / self.needed_tokens

    @property
    def truncated(self) -> bool:
        return self.estimate_tokens < self.needed_tokens


@dataclass(frozen=True)
class TableSummary:
    """Truncation rate and the spread of estimate / needed over a table."""

    rows: int
    truncated: int
    min_ratio: float
    median_ratio: float
    max_ratio: float

    @property
    def truncation_rate(self) -> float:
        return self.truncated / self.rows


def needed_tokens(duration_s: float) -> int:
    """Audio ids a clip of ``duration_s`` seconds occupies (41.67 per second, rounded up)."""
    return math.ceil(duration_s * AUDIO_TOKENS_PER_SECOND - _ROUNDING_SLACK)


def load_utterances(path: Path | str = DEFAULT_TABLE) -> list[Utterance]:
    """Read the TSV (``#`` comment lines, one header line, tab-separated, no quoting)."""
    path = Path(path)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith(COMMENT_PREFIX)]
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise UtteranceTableError(f"{path}: the first non-comment line must be the header {'<TAB>'.join(COLUMNS)}.")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(COLUMNS):
            raise UtteranceTableError(
                f"{path}: data line {number} has {len(fields)} tab-separated fields, expected {len(COLUMNS)}."
            )
        corpus, utterance_id, language, duration, text, source = fields
        try:
            duration_s = float(duration)
        except ValueError as err:
            raise UtteranceTableError(f"{path}: data line {number}: duration_s {duration!r} is not a number.") from err
        if not duration_s > 0 or not text.strip():
            raise UtteranceTableError(f"{path}: data line {number} needs a positive duration and a transcript.")
        rows.append(Utterance(corpus, utterance_id, language, duration_s, text, source))
    return rows


def budget_table(path: Path | str = DEFAULT_TABLE) -> list[UtteranceBudget]:
    """Per row: needed tokens from the measured duration and the clone cap from the text."""
    return [
        UtteranceBudget(u, needed_tokens(u.duration_s), estimate_clone_tokens(u.text)) for u in load_utterances(path)
    ]


def summarize(budgets: list[UtteranceBudget]) -> TableSummary:
    if not budgets:
        raise UtteranceTableError("The utterance table has no rows.")
    ratios = [b.ratio for b in budgets]
    return TableSummary(
        rows=len(budgets), truncated=sum(b.truncated for b in budgets), min_ratio=min(ratios),
        median_ratio=statistics.median(ratios), max_ratio=max(ratios),
    )


def describe(budget: UtteranceBudget) -> str:
    u = budget.utterance
    return (f"{u.corpus} {u.utterance_id} ({u.language}, {u.duration_s:g} s): needs {budget.needed_tokens}, "
            f"cap {budget.estimate_tokens}, ratio {budget.ratio:.3f} - {u.text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budgets = budget_table(args.table)
    summary = summarize(budgets)
    logger.info("%d real utterances: truncation rate %.1f %% (%d rows); estimate/needed min %.3f, median %.3f, "
                "max %.3f", summary.rows, 100 * summary.truncation_rate, summary.truncated, summary.min_ratio,
                summary.median_ratio, summary.max_ratio)
    for budget in sorted(budgets, key=lambda b: b.ratio)[:WORST_ROWS_LOGGED]:
        logger.info("  %s", describe(budget))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
