"""Speech recognition with the Paraformer checkpoint of Step-Audio-Tokenizer (no FunASR at run time)."""

from .text import Word, postprocess, timed_words
from .transcriber import Transcriber, Transcript, asr_layout

__all__ = ["Transcriber", "Transcript", "Word", "asr_layout", "postprocess", "timed_words"]
