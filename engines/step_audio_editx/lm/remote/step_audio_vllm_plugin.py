"""vLLM logits processor that makes a vLLM server obey the pack's audio rules (server side only).

Loaded by the server, never by the pack: ``--logits-processors step_audio_vllm_plugin:StepAudioSlotProcessor``
with this folder on the server's PYTHONPATH (docs/remote_lm.md). vLLM is imported only when the server
asks for the class (PEP 562 ``__getattr__``), so the pack imports this module (for the request keys and
the pure rule functions its tests compare with the local sampler) without vLLM installed.

Per request, the client turns the rules on through ``vllm_xargs`` (``SamplingParams.extra_args``):

* ``step_audio_constrain``: vq02 ids at group positions 0-1, vq06 ids at 2-4, ``<|EOT|>`` only where a
  group would start and never first (the local ``sampling.constrain_logits``);
* ``step_audio_repetition_guard``: ban the last id when it occurs more than once in the last 10 ids,
  prompt included, once 10 ids exist (the local ``sampling.repetition_guard``);
* ``step_audio_probe``: a handshake. The output is forced to ``PROBE_LENGTH`` ids that tell the client
  that this plugin runs, its version, and facts of the served model (Step1? tied LM head? Step1's
  vocabulary?) which the HTTP API does not expose.

Requests without these keys are left alone, so one server can also serve other clients.
The module stands alone (its only import from the pack is ``constants.py``, loaded by file path when the
module is not imported as part of the pack) so the server needs neither the pack's dependencies nor its
transformers registration of ``step1``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Sequence

try:  # part of the pack (the client and the tests)
    from ... import constants as _c
except ImportError:  # the vLLM server: this folder alone on PYTHONPATH
    _spec = importlib.util.spec_from_file_location(
        "step_audio_editx_constants", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                   "constants.py"))
    _c = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_c)

PLUGIN_VERSION = 1
PROCESSOR_NAME = "StepAudioSlotProcessor"
PLUGIN_FQCN = f"{__name__.rsplit('.', 1)[-1]}:{PROCESSOR_NAME}"  # what --logits-processors takes

XARG_CONSTRAIN = "step_audio_constrain"
XARG_GUARD = "step_audio_repetition_guard"
XARG_PROBE = "step_audio_probe"

STEP1_ARCHITECTURE = "Step1ForCausalLM"

# The handshake answer: PROBE_MARK_ID, then PROBE_BASE_ID + version, then PROBE_BASE_ID + flags. Low text ids,
# so a model of any vocabulary can emit them; the client asks for exactly PROBE_LENGTH ids with EOS ignored.
PROBE_MARK_ID = _c.BOT_ID
PROBE_BASE_ID = 16
PROBE_LENGTH = 3
FLAG_STEP1 = 1  # the served architecture is Step1ForCausalLM
FLAG_TIED_HEAD = 2  # the LM head shares the embedding (Step1's must not: serve with tie_word_embeddings false)
FLAG_STEP1_VOCAB = 4  # vocab_size is Step1's 74,752 (text pieces + vq02 + vq06 codes)


@dataclass(frozen=True)
class ModelFacts:
    """What the handshake reports about the served model."""

    plugin_version: int
    step1: bool
    tied_head: bool
    step1_vocab: bool


def model_flags(hf_config: Any) -> int:
    """The handshake's flag bits for a served model's HF config (as vLLM resolved it, overrides applied)."""
    architectures = list(getattr(hf_config, "architectures", None) or ())
    flags = FLAG_STEP1 if STEP1_ARCHITECTURE in architectures else 0
    if getattr(hf_config, "tie_word_embeddings", True):  # vLLM's step1.py ties when the key is absent
        flags |= FLAG_TIED_HEAD
    if getattr(hf_config, "vocab_size", None) == _c.TEXT_VOCAB_SIZE:
        flags |= FLAG_STEP1_VOCAB
    return flags


def probe_answer(flags: int) -> list[int]:
    """The ids a probe request is forced to generate."""
    return [PROBE_MARK_ID, PROBE_BASE_ID + PLUGIN_VERSION, PROBE_BASE_ID + flags]


def read_probe_answer(ids: Sequence[int]) -> ModelFacts | None:
    """The facts in a probe's output, or None when the output is not a handshake (plugin not loaded)."""
    ids = list(ids)
    if len(ids) < PROBE_LENGTH or ids[0] != PROBE_MARK_ID or ids[1] <= PROBE_BASE_ID or ids[2] < PROBE_BASE_ID:
        return None
    flags = ids[2] - PROBE_BASE_ID
    return ModelFacts(plugin_version=ids[1] - PROBE_BASE_ID, step1=bool(flags & FLAG_STEP1),
                      tied_head=bool(flags & FLAG_TIED_HEAD), step1_vocab=bool(flags & FLAG_STEP1_VOCAB))


@dataclass
class RequestRules:
    """One request's switches and live token lists (vLLM appends to ``output`` as it samples)."""

    constrain: bool
    guard: bool
    probe: bool
    prompt_tail: list[int]  # the prompt's last constants.REPETITION_WINDOW ids
    output: Sequence[int]


def rules_from_extra_args(extra: dict | None, prompt: Sequence[int] | None, output: Sequence[int]
                          ) -> RequestRules | None:
    """The rules a request asked for, or None when it asked for none (the request is left alone)."""
    extra = extra or {}
    rules = RequestRules(bool(extra.get(XARG_CONSTRAIN)), bool(extra.get(XARG_GUARD)), bool(extra.get(XARG_PROBE)),
                         list(prompt or ())[-_c.REPETITION_WINDOW:], output)
    return rules if (rules.constrain or rules.guard or rules.probe) else None


def slot_allowed(vocab_size: int, device=None):
    """Bool [TOKENS_PER_GROUP + 1, V]: ids allowed at each group position; the last row is the first step
    (position 0 without ``<|EOT|>``: every output holds at least one group)."""
    import torch

    allowed = torch.zeros(_c.TOKENS_PER_GROUP + 1, vocab_size, dtype=torch.bool, device=device)
    vq02 = slice(_c.VQ02_FIRST_ID, min(_c.VQ02_LAST_ID + 1, vocab_size))
    vq06 = slice(_c.VQ06_FIRST_ID, min(_c.VQ06_LAST_ID + 1, vocab_size))
    allowed[:_c.VQ02_PER_GROUP, vq02] = True
    allowed[_c.VQ02_PER_GROUP:_c.TOKENS_PER_GROUP, vq06] = True
    allowed[_c.TOKENS_PER_GROUP, vq02] = True
    allowed[0, _c.EOT_ID] = True
    return allowed


def repeated_id(rules: RequestRules) -> int | None:
    """The id the repetition guard bans for this request now, if any."""
    window = (list(rules.prompt_tail) + list(rules.output))[-_c.REPETITION_WINDOW:]
    if len(window) < _c.REPETITION_WINDOW or min(window) < 0:  # vLLM's placeholder for an id still in flight
        return None
    return window[-1] if window.count(window[-1]) > _c.REPETITION_MAX_COUNT else None


def apply_rules(logits, rows: dict[int, RequestRules], allowed, probe_flags: int):
    """Mask ``logits`` [B, V] in place for every batch row in ``rows``; returns the logits."""
    import torch

    if not rows:
        return logits
    masked, positions, banned_rows, banned_ids = [], [], [], []
    for index, rules in rows.items():
        step = len(rules.output)
        if rules.probe:
            forced = probe_answer(probe_flags)[min(step, PROBE_LENGTH - 1)]
            keep = logits[index, forced].clone()
            logits[index] = float("-inf")
            logits[index, forced] = torch.nan_to_num(keep, neginf=0.0)
            continue
        if rules.constrain:
            masked.append(index)
            positions.append(_c.TOKENS_PER_GROUP if step == 0 else step % _c.TOKENS_PER_GROUP)
        if rules.guard:
            banned = repeated_id(rules)
            if banned is not None:
                banned_rows.append(index)
                banned_ids.append(banned)
    if masked:
        index = torch.tensor(masked, device=logits.device)
        allow = allowed[torch.tensor(positions, device=allowed.device)].to(logits.device)
        logits[index] = logits[index].masked_fill(~allow, float("-inf"))
    if banned_rows:
        logits[torch.tensor(banned_rows, device=logits.device),
               torch.tensor(banned_ids, device=logits.device)] = float("-inf")
    return logits


def _build_processor_class():
    """The vLLM v1 LogitsProcessor subclass (imports vLLM: call on the server only)."""
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    class StepAudioSlotProcessor(LogitsProcessor):
        """Applies the audio-slot constraint, the repetition guard and the handshake per request."""

        def __init__(self, vllm_config, device, is_pin_memory: bool):
            hf_config = vllm_config.model_config.hf_config
            self.flags = model_flags(hf_config)
            self.allowed = slot_allowed(vllm_config.model_config.get_vocab_size(), device)
            self.rows: dict[int, RequestRules] = {}

        def is_argmax_invariant(self) -> bool:
            return False  # it bans ids, so greedy decoding must see it too

        def update_state(self, batch_update: BatchUpdate | None) -> None:
            if batch_update is None:
                return
            for index in batch_update.removed:
                self.rows.pop(index, None)
            for index, params, prompt, output in batch_update.added:
                rules = rules_from_extra_args(getattr(params, "extra_args", None), prompt, output)
                if rules is None:
                    self.rows.pop(index, None)
                else:
                    self.rows[index] = rules
            for a, b, direction in batch_update.moved:
                ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
                if ra is not None:
                    self.rows[b] = ra
                if rb is not None and direction == MoveDirectionality.SWAP:
                    self.rows[a] = rb

        def apply(self, logits):
            return apply_rules(logits, self.rows, self.allowed, self.flags)

    StepAudioSlotProcessor.__module__ = __name__
    return StepAudioSlotProcessor


_CLASSES: dict[str, type] = {}


def __getattr__(name: str):
    if name != PROCESSOR_NAME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _CLASSES:
        _CLASSES[name] = _build_processor_class()
    return _CLASSES[name]
