"""Errors raised by the decoder stage; each message says what was wrong and what to do."""

from __future__ import annotations


class DecoderConfigError(ValueError):
    """``cosyvoice.yaml`` is missing a value, names a class we do not implement, or is inconsistent."""


class DecoderWeightsError(ValueError):
    """``flow.pt`` / ``hift.pt`` is missing or does not match the shapes that ``cosyvoice.yaml`` states."""


class Token2WavInputError(ValueError):
    """Tokens, prompt mel or speaker embedding handed to the decoder are unusable."""
