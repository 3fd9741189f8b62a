"""Constrained, batched, seeded generation of audio tokens with Step1: the entry point the engine calls.

``generate(model, prompts, max_new_tokens, sampling, seeds, progress, fast)`` takes N prompts (id lists
of any lengths) and returns one ``GenerationOutput`` per prompt: the chosen ids (<|EOT|> excluded), why
the row stopped (EOS at <|EOT|>, CAP at its own ``max_new_tokens``, INTERRUPTED when ``progress``
returned True), and the call's timings. Token choice is ``sampling.select_next`` everywhere: the audio
constraint, the official repetition guard, temperature / top-k / top-p and counter-based noise, so a
row's ids depend only on its prompt, seed and settings, never on the rest of the batch.

Two paths compute the same thing:

* fast (default): ``DecodeSession``, cached per model: static KV cache, fused weights, and on CUDA one
  captured CUDA graph per (batch bucket, settings) with fused Triton kernels and in-graph sampling; on
  CPU the same step runs eagerly with torch ops (logged once).
* plain (``fast=False``): the transformers-style loop (left-padded batch, growing ``DynamicCache``,
  the model's own forward), the reference the fast path is tested against.

``progress`` is called after every token with ``Progress(stage="generate", done, total)`` where ``done`` is
the token count of the slowest unfinished row and ``total`` the largest cap; if it returns True the call
stops and unfinished rows end INTERRUPTED; if it raises, the exception propagates (ComfyUI's cancel).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from ..constants import EOT_ID, MAX_CONTEXT_TOKENS, PAD_ID, VQ06_LAST_ID
from ..types import Progress, ProgressCallback, SamplingConfig, StopReason
from .decode_session import DecodeOptions, DecodeSession
from .decode_state import DecodeState, SamplerTables, choose_and_commit
from .step1 import DECODE_STATE_ATTR

logger = logging.getLogger(__name__)

DECODE_SESSION_ATTR = DECODE_STATE_ATTR  # where a model keeps its session (Step1ForCausalLM drops it on _apply)
_LOGGED: set[str] = set()


class GenerationRequestError(ValueError):
    """A generate() request that cannot run as given (the message says what to change)."""


@dataclass
class GenerationOutput:
    """One prompt's result. ``tokens``: generated ids, <|EOT|> excluded. Timings are the whole call's."""

    tokens: list[int]
    stop_reason: StopReason
    n_prompt_tokens: int
    max_new_tokens: int
    prefill_s: float
    decode_s: float
    warmup_s: float = 0.0  # graph capture / kernel selection paid during this call (0 once warm)
    path: str = "plain"  # "plain", "static", "cuda-graph+triton", ...

    @property
    def n_generated(self) -> int:
        return len(self.tokens)


def _log_once(key: str, message: str, *args, level: int = logging.INFO) -> None:
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.log(level, message, *args)


def _validate(model, prompts: list[list[int]], max_new_tokens: list[int], seeds: list[int],
              sampling: SamplingConfig) -> None:
    if not prompts:
        raise GenerationRequestError("generate() got no prompts; pass at least one list of token ids.")
    if len(max_new_tokens) != len(prompts) or len(seeds) != len(prompts):
        raise GenerationRequestError(
            f"generate() got {len(prompts)} prompts, {len(max_new_tokens)} max_new_tokens and {len(seeds)} seeds; "
            "pass one cap and one seed per prompt."
        )
    vocab = model.config.vocab_size
    for i, (prompt, cap) in enumerate(zip(prompts, max_new_tokens)):
        if len(prompt) == 0:
            raise GenerationRequestError(f"prompt {i} is empty; every prompt needs at least one token id.")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise GenerationRequestError(f"prompt {i} holds ids outside the vocabulary [0, {vocab}); "
                                         "build prompts with the pack's text tokenizer.")
        if cap < 1:
            raise GenerationRequestError(f"max_new_tokens[{i}] is {cap}; it must be at least 1.")
        if len(prompt) + cap > MAX_CONTEXT_TOKENS:
            raise GenerationRequestError(
                f"prompt {i} has {len(prompt)} tokens and asks for {cap} more: over the {MAX_CONTEXT_TOKENS}-token "
                "context. Shorten the input audio or lower max_new_tokens."
            )
    if sampling.constrain_audio and vocab <= VQ06_LAST_ID:
        raise GenerationRequestError(
            f"the audio constraint needs the audio ids, but this model's vocabulary has only {vocab} ids; "
            "turn constrain_audio off for text-only test models."
        )


def get_decode_session(model, options: DecodeOptions | None = None) -> DecodeSession:
    """The model's cached session (built on first use, rebuilt when the weights moved or options changed)."""
    session = model.__dict__.get(DECODE_SESSION_ATTR)
    if session is not None and (not session.matches(model) or (options is not None and options != session.options)):
        session.release()
        session = None
    if session is None:
        session = DecodeSession(model, options)
        model.__dict__[DECODE_SESSION_ATTR] = session
        if session.device.type != "cuda":
            _log_once("cpu", "Fast Step1 decoding needs CUDA (graphs + Triton kernels); on %s the static-cache loop "
                      "runs eagerly with torch ops", session.device)
        else:
            logger.info("Step1 fast decoding on %s: %s", session.device, session.mode)
    return session


def release_decode_session(model) -> None:
    """Free the model's cached decode state (KV cache, graphs); the next fast generate() rebuilds it."""
    session = model.__dict__.pop(DECODE_SESSION_ATTR, None)
    if session is not None:
        session.release()


def generate(model, prompts: list[list[int]], max_new_tokens: list[int], sampling: SamplingConfig,
             seeds: list[int], progress: ProgressCallback | None = None, fast: bool = True
             ) -> list[GenerationOutput]:
    """Generate audio ids for every prompt (see the module docstring for the contract)."""
    prompts = [list(map(int, p)) for p in prompts]
    max_new_tokens = [int(c) for c in max_new_tokens]
    seeds = [int(s) for s in seeds]
    _validate(model, prompts, max_new_tokens, seeds, sampling)
    with torch.inference_mode():
        if fast:
            session = get_decode_session(model)
            result = session.run(prompts, max_new_tokens, sampling, seeds, progress)
            path = session.mode
            tokens, reasons = result.tokens, result.stop_reasons
            prefill_s, decode_s, warmup_s = result.prefill_s, result.decode_s, result.warmup_s
        else:
            tokens, reasons, prefill_s, decode_s = _generate_plain(model, prompts, max_new_tokens, sampling, seeds,
                                                                   progress)
            path, warmup_s = "plain", 0.0
    n_new = sum(len(t) for t in tokens)
    logger.debug("Step1 generated %d ids for %d prompts (%s): prefill %.3f s, decode %.3f s", n_new, len(prompts),
                 path, prefill_s, decode_s)
    return [GenerationOutput(tokens=t, stop_reason=r, n_prompt_tokens=len(p), max_new_tokens=c, prefill_s=prefill_s,
                             decode_s=decode_s, warmup_s=warmup_s, path=path)
            for t, r, p, c in zip(tokens, reasons, prompts, max_new_tokens)]


def _generate_plain(model, prompts: list[list[int]], caps: list[int], sampling: SamplingConfig, seeds: list[int],
                    progress: ProgressCallback | None) -> tuple[list[list[int]], list[StopReason], float, float]:
    """The reference: left-padded batch, DynamicCache, one forward per token, full-vocabulary logits."""
    from transformers.cache_utils import DynamicCache

    device = model.lm_head.weight.device
    count = len(prompts)
    longest = max(len(p) for p in prompts)
    ids = torch.full((count, longest), PAD_ID, dtype=torch.long)
    mask = torch.zeros(count, longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = torch.tensor(prompt)
        mask[row, longest - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    state = DecodeState.allocate(count, count, max(caps), model.config.hidden_size, device, model.dtype)
    state.load_requests(prompts, caps, seeds, count)
    tables = SamplerTables.build(model.lm_head.weight, None, sampling.constrain_audio)
    cache = DynamicCache()
    start = time.perf_counter()
    logits = model(ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    choose_and_commit(logits, sampling, state, tables)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    total = max(caps)
    interrupted = progress is not None and bool(progress(Progress(stage="generate", done=1, total=total)))
    step = 1
    ones = mask.new_ones(count, 1)
    while not interrupted and step < total and bool(state.active.any()):
        mask = torch.cat([mask, ones], dim=1)
        logits = model(state.tokens[:, None], attention_mask=mask, cache=cache, use_cache=True).logits[:, -1]
        choose_and_commit(logits, sampling, state, tables)
        step += 1
        if progress is not None and progress(Progress(stage="generate", done=step, total=total)):
            interrupted = True
    decode_s = time.perf_counter() - start
    out = state.out[:count].cpu()
    n_gen = state.n_gen.cpu().tolist()
    tokens, reasons = [], []
    for row in range(count):
        chosen = out[row, :n_gen[row]].tolist()
        if chosen and chosen[-1] == EOT_ID:
            tokens.append(chosen[:-1])
            reasons.append(StopReason.EOS)
        else:
            tokens.append(chosen)
            reasons.append(StopReason.CAP if n_gen[row] >= caps[row] else StopReason.INTERRUPTED)
    return tokens, reasons, prefill_s, decode_s
