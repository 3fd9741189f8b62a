"""Long clips and missing transcripts: segmentation at word boundaries, transcript alignment, joining."""

from .edit import fill_clone_texts, run_edits
from .join import CROSSFADE_SECONDS, crossfade_join
from .segment import PiecePlan, plan_pieces

__all__ = ["CROSSFADE_SECONDS", "PiecePlan", "crossfade_join", "fill_clone_texts", "plan_pieces", "run_edits"]
