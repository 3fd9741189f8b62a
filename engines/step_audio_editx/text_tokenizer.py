"""Exact official text ids for Step-Audio-EditX, through the ``sentencepiece`` library itself.

The official ids come from transformers 4.5x's fast tokenizer converted from ``tokenizer.model``:
special pieces are split out of the text first, every text span between them is encoded without a
dummy "▁" prefix, and nothing is normalised. Transformers 5.x converts this Unigram model
differently (0 of 10 parity prompts right), so no transformers tokenizer class is used here.

What this module does instead:

* loads the official ``tokenizer.model`` protobuf, turns off ``normalizer_spec.add_dummy_prefix``
  (and ``remove_extra_whitespaces``, so runs of spaces survive) and loads it from serialized bytes;
* splits every control / user-defined / unknown piece (``<s>``, ``</s>``, ``<|BOT|>``, ``<|EOT|>``,
  ``<audio_N>``, ... : 9,284 pieces in the official model, all of the form ``<...>`` without inner
  angle brackets) out of the text and maps each to its id by a dictionary lookup, so a string of tens
  of thousands of ``<audio_N>`` pieces never goes through SentencePiece;
* encodes the text spans in between with SentencePiece (byte fallback, as in the official model).

``encode(text)`` therefore equals the official tokenizer on any text that does not start with plain
text (the chat layout always starts with ``<s>``), with no BOS/EOS added.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from .constants import AUDIO_TOKEN_OFFSET, VQ06_LAST_ID

logger = logging.getLogger(__name__)

TOKENIZER_FILENAME = "tokenizer.model"
HUB_REPO_ID = "stepfun-ai/Step-Audio-EditX"

# SentencePiece ModelProto.SentencePiece.Type values that the official fast tokenizer treats as
# added tokens (matched whole inside text): UNKNOWN=2, CONTROL=3, USER_DEFINED=4.
_SPLIT_PIECE_TYPES = (2, 3, 4)

# Every piece of those types in the official model is "<" + no angle brackets + ">", so a candidate
# span is found by this pattern and confirmed by a dictionary lookup (leftmost match wins, as in the
# official added-token splitter, because no candidate can overlap another).
_SPECIAL_CANDIDATE = re.compile(r"<[^<>]+>")


class TokenizerError(ValueError):
    """The tokenizer file is missing, malformed, or not the Step-Audio-EditX tokenizer."""


class TokenizerFileMissing(TokenizerError, FileNotFoundError):
    """``tokenizer.model`` is not where it should be."""


class TextTokenizer:
    """SentencePiece ids exactly as the official Step-Audio-EditX prompt path produces them.

    Build with :meth:`from_folder` (the model folder holding ``tokenizer.model``) or
    :meth:`from_file`. ``encode`` returns ids without BOS/EOS; ``decode`` inverts it.
    """

    def __init__(self, model_bytes: bytes, source: str = "<bytes>"):
        try:
            import sentencepiece as spm
            from sentencepiece import sentencepiece_model_pb2
        except ImportError as err:  # pragma: no cover - sentencepiece is a hard dependency
            raise TokenizerError(
                "The 'sentencepiece' package (with protobuf) is needed to read tokenizer.model: "
                "pip install sentencepiece protobuf"
            ) from err

        proto = sentencepiece_model_pb2.ModelProto()
        try:
            proto.ParseFromString(model_bytes)
        except Exception as err:  # protobuf raises DecodeError, a plain Exception subclass
            raise TokenizerError(f"{source} is not a SentencePiece model: {err}") from err
        if not proto.pieces:
            raise TokenizerError(f"{source} holds no SentencePiece pieces; re-download it from {HUB_REPO_ID}.")

        proto.normalizer_spec.add_dummy_prefix = False
        proto.normalizer_spec.remove_extra_whitespaces = False
        processor = spm.SentencePieceProcessor()
        processor.LoadFromSerializedProto(proto.SerializeToString())

        self._sp = processor
        self.source = source
        self._pieces: list[str] = [p.piece for p in proto.pieces]
        self._special_ids: dict[str, int] = {}
        for i, p in enumerate(proto.pieces):
            if p.type in _SPLIT_PIECE_TYPES:
                self._special_ids.setdefault(p.piece, i)
        self._is_special = [False] * len(self._pieces)
        for i in self._special_ids.values():
            self._is_special[i] = True
        self._check_layout()

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise TokenizerFileMissing(
                f"{path.name} not found in the model folder {path.parent}. It ships with the "
                f"Step-Audio-EditX model: download the folder from the Hugging Face hub repo "
                f"{HUB_REPO_ID} (at least {TOKENIZER_FILENAME}) into {path.parent}."
            )
        return cls(path.read_bytes(), source=str(path))

    @classmethod
    def from_folder(cls, model_dir: str | Path) -> TextTokenizer:
        """Load ``<model_dir>/tokenizer.model`` (the Step-Audio-EditX model folder)."""
        return cls.from_file(Path(model_dir) / TOKENIZER_FILENAME)

    def _check_layout(self) -> None:
        """Audio ids are written into prompts directly, so the model must place them where we do."""
        first, last = f"<audio_{0}>", f"<audio_{VQ06_LAST_ID - AUDIO_TOKEN_OFFSET}>"
        if self._special_ids.get(first) != AUDIO_TOKEN_OFFSET or self._special_ids.get(last) != VQ06_LAST_ID:
            raise TokenizerError(
                f"{self.source} is not the Step-Audio-EditX tokenizer: {first} must be id "
                f"{AUDIO_TOKEN_OFFSET} and {last} id {VQ06_LAST_ID}. Use tokenizer.model from {HUB_REPO_ID}."
            )

    # --- vocabulary --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def piece_to_id(self, piece: str) -> int:
        """Id of an exact piece (e.g. ``"<|BOT|>"``, ``"▁system"``); unknown pieces raise."""
        if piece in self._special_ids:
            return self._special_ids[piece]
        i = self._sp.piece_to_id(piece)
        if self._pieces[i] != piece:
            raise TokenizerError(f"{piece!r} is not a piece of {self.source}.")
        return i

    def id_to_piece(self, token_id: int) -> str:
        self._check_id(token_id)
        return self._pieces[token_id]

    def is_special(self, token_id: int) -> bool:
        """True for control, user-defined (incl. ``<audio_N>``) and unknown pieces."""
        self._check_id(token_id)
        return self._is_special[token_id]

    def find_special_pieces(self, text: str) -> list[str]:
        """The special pieces (``<|BOT|>``, ``<audio_5>``, ...) written inside ``text``, in order."""
        return [m.group() for m in _SPECIAL_CANDIDATE.finditer(text) if m.group() in self._special_ids]

    def _check_id(self, token_id: int) -> None:
        if not 0 <= int(token_id) < len(self._pieces):
            raise TokenizerError(f"Token id {token_id} is outside the vocabulary (0..{len(self._pieces) - 1}).")

    # --- encode / decode ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Official ids of ``text``: special pieces by id, spans between them by SentencePiece.

        No BOS/EOS is added and no "▁" is prepended to the first span.
        """
        ids: list[int] = []
        start = 0
        for m in _SPECIAL_CANDIDATE.finditer(text):
            special = self._special_ids.get(m.group())
            if special is None:
                continue
            if m.start() > start:
                ids.extend(self._sp.encode(text[start:m.start()]))
            ids.append(special)
            start = m.end()
        if start < len(text):
            ids.extend(self._sp.encode(text[start:]))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special pieces come back verbatim (``<audio_N>``, ``<|EOT|>``)."""
        out: list[str] = []
        run: list[int] = []
        for token_id in ids:
            token_id = int(token_id)
            self._check_id(token_id)
            if self._is_special[token_id]:
                if run:
                    out.append(self._sp.decode(run))
                    run = []
                out.append(self._pieces[token_id])
            else:
                run.append(token_id)
        if run:
            out.append(self._sp.decode(run))
        return "".join(out)

    def encode_pieces(self, text: str) -> list[str]:
        """The pieces of :meth:`encode` (for logs and debugging)."""
        return [self._pieces[i] for i in self.encode(text)]

    def __repr__(self) -> str:
        return f"TextTokenizer({self.source!r}, vocab_size={self.vocab_size})"
