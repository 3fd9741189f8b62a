"""The remote language model: Step1 generation on a vLLM server, same contract as the local ``generate``.

``RemoteLM.generate(prompts, caps, sampling, seeds, progress)`` sends every prompt as its own streamed
``POST /v1/completions`` (a token-id prompt, ``return_token_ids``, our sampling settings, the row's seed,
``<|EOT|>`` as the stop id and the audio rules as ``vllm_xargs`` for the pack's logits-processor plugin),
all at once up to ``max_concurrency``, so the server's continuous batching does the batching. Progress
is reported from the streams; Cancel closes the streams, which makes vLLM abort those requests.

Seeds: vLLM's per-request ``seed`` makes a row's tokens reproducible on one server (same model, dtype and
vLLM version), but they are not the local path's tokens: the server draws its own noise, while the local
sampler uses counter-based noise.

``connect()`` runs once before the first call: it finds the served model (``GET /v1/models``) and makes
a handshake request that only the plugin answers, which also reports what the HTTP API does not
(architecture, tied LM head, vocabulary size). Anything wrong is a ``RemoteLMWrongServer`` naming the fix.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from ...constants import BOS_ID, EOT_ID, TEXT_VOCAB_SIZE, TOKENS_PER_GROUP
from ...types import Progress, ProgressCallback, SamplingConfig, StopReason
from ..generation import GenerationOutput, GenerationRequestError
from . import step_audio_vllm_plugin as plugin
from .config import RemoteLMConfig, RemoteLMRequestError, RemoteLMWrongServer
from .transport import Canceller, Cancelled, Transport

logger = logging.getLogger(__name__)

COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
PROGRESS_POLL_S = 0.1  # how often the calling thread reports progress and looks for a cancel
CANCEL_GRACE_S = 5.0  # how long a cancelled call waits for its streams to close
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
PATH_NAME = "remote-vllm"


@dataclass(frozen=True)
class ServerInfo:
    """What the handshake found."""

    model: str
    max_model_len: int
    facts: plugin.ModelFacts


@dataclass
class _Row:
    """One request's live state, shared between its stream thread and the calling thread."""

    prompt: list[int]
    cap: int
    seed: int
    tokens: list[int]
    finish: Optional[str] = None
    first_token_s: Optional[float] = None


def sampling_fields(sampling: SamplingConfig) -> dict:
    """Our sampling settings as completions fields (+ the plugin's switches); greedy is temperature 0."""
    fields = {"temperature": 0.0 if sampling.greedy else float(sampling.temperature), "top_p": float(sampling.top_p),
              "top_k": int(sampling.top_k), "repetition_penalty": 1.0, "min_p": 0.0}
    xargs = {}
    if sampling.constrain_audio:
        xargs[plugin.XARG_CONSTRAIN] = 1
    if sampling.repetition_guard:
        xargs[plugin.XARG_GUARD] = 1
    if xargs:
        fields["vllm_xargs"] = xargs
    return fields


def completion_body(model: str, prompt: Sequence[int], cap: int, sampling: SamplingConfig, seed: int) -> dict:
    """The streamed completion request of one row."""
    return {"model": model, "prompt": list(prompt), "max_tokens": int(cap), "seed": int(seed), "stream": True,
            "return_token_ids": True, "stop_token_ids": [EOT_ID], **sampling_fields(sampling)}


def stop_reason(tokens: list[int], finish: Optional[str], cap: int) -> tuple[list[int], StopReason]:
    """The audio ids (<|EOT|> removed) and why the row ended, as the local path reports them."""
    if tokens and tokens[-1] == EOT_ID:
        return tokens[:-1], StopReason.EOS
    if finish == FINISH_STOP:
        return tokens, StopReason.EOS
    if finish == FINISH_LENGTH or len(tokens) >= cap:
        return tokens, StopReason.CAP
    return tokens, StopReason.INTERRUPTED


class RemoteLM:
    """Generates on a vLLM server. Thread-safe; one instance per engine."""

    group_by_length = False  # the server batches continuously: send every row at once

    def __init__(self, config: RemoteLMConfig):
        self.config = config
        self.transport = Transport(config)
        self._info: Optional[ServerInfo] = None
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return PATH_NAME

    # -- handshake ----------------------------------------------------------------------------------
    def connect(self) -> ServerInfo:
        """Find the served model and check it can serve Step1 with the pack's rules (once)."""
        with self._lock:
            if self._info is None:
                self._info = self._handshake()
            return self._info

    def _handshake(self) -> ServerInfo:
        c = self.config
        listing = self.transport.get_json(MODELS_PATH)
        models = [m for m in (listing.get("data") or []) if isinstance(m, dict) and m.get("id")]
        names = [m["id"] for m in models]
        if c.model is not None:
            chosen = [m for m in models if m["id"] == c.model]
            if not chosen:
                raise RemoteLMWrongServer(f"The LM server at {c.url} does not serve {c.model!r} (it serves: "
                                          f"{', '.join(names) or 'nothing'}).")
        elif len(models) != 1:
            raise RemoteLMWrongServer(f"The LM server at {c.url} serves {len(models)} models ({', '.join(names)}); "
                                      "name one (RemoteLMConfig.model).")
        else:
            chosen = models
        model = chosen[0]["id"]
        max_len = int(chosen[0].get("max_model_len") or 0)
        answer = self.transport.post_json(COMPLETIONS_PATH, {
            "model": model, "prompt": [BOS_ID], "max_tokens": plugin.PROBE_LENGTH, "temperature": 0.0,
            "ignore_eos": True, "return_token_ids": True, "vllm_xargs": {plugin.XARG_PROBE: 1}})
        choice = (answer.get("choices") or [{}])[0]
        if choice.get("token_ids") is None:
            raise RemoteLMWrongServer(f"The LM server at {c.url} returns no token ids: it needs vLLM with "
                                      "`return_token_ids` on /v1/completions (0.10.2 or later; Step1 needs 0.14+).")
        facts = plugin.read_probe_answer(choice["token_ids"])
        if facts is None:
            raise RemoteLMWrongServer(
                f"The LM server at {c.url} runs without the pack's logits processor, so it would not keep the audio "
                f"slots in phase. Start it with --logits-processors {plugin.PLUGIN_FQCN} and the pack's "
                "engines/step_audio_editx/lm/remote folder on its PYTHONPATH (docs/remote_lm.md).")
        problems = []
        if facts.plugin_version != plugin.PLUGIN_VERSION:
            problems.append(f"its plugin is version {facts.plugin_version}, this pack speaks {plugin.PLUGIN_VERSION} "
                            "(point the server at this pack's plugin)")
        if not facts.step1_vocab:
            problems.append(f"its model's vocabulary is not Step1's {TEXT_VOCAB_SIZE} ids (text + vq02 + vq06 codes)")
        if c.require_step1 and not facts.step1:
            problems.append(f"its model {model!r} is not {plugin.STEP1_ARCHITECTURE} (serve the Step-Audio-EditX folder)")
        if facts.tied_head:
            problems.append("its LM head is tied to the embedding; Step1's is not: add "
                            "--hf-overrides '{\"tie_word_embeddings\": false}'")
        if problems:
            raise RemoteLMWrongServer(f"The LM server at {c.url} cannot serve Step-Audio-EditX: " + "; ".join(problems)
                                      + ".")
        logger.info("LM server %s: model %r, max_model_len %d, plugin v%d", c.url, model, max_len,
                    facts.plugin_version)
        return ServerInfo(model, max_len, facts)

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], max_new_tokens: list[int], sampling: SamplingConfig,
                 seeds: list[int], progress: ProgressCallback | None = None) -> list[GenerationOutput]:
        """Generate audio ids for every prompt on the server (the local ``generate`` contract)."""
        info = self.connect()
        rows = [_Row([int(t) for t in p], self._fit_cap(p, int(c), info), int(s), [])
                for p, c, s in zip(prompts, max_new_tokens, seeds, strict=True)]
        canceller = Canceller.new()
        started = time.perf_counter()
        pool = futures.ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(rows)),
                                          thread_name_prefix="step-audio-remote-lm")
        try:
            pending = {pool.submit(self._run_row, row, sampling, info, canceller, started): row for row in rows}
            self._watch(pending, rows, canceller, progress)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        elapsed = time.perf_counter() - started
        firsts = [r.first_token_s for r in rows if r.first_token_s is not None]
        prefill_s = min(firsts) if firsts else elapsed
        outputs = []
        for row in rows:
            tokens, reason = stop_reason(row.tokens, row.finish, row.cap)
            outputs.append(GenerationOutput(tokens=tokens, stop_reason=reason, n_prompt_tokens=len(row.prompt),
                                            max_new_tokens=row.cap, prefill_s=prefill_s, decode_s=elapsed - prefill_s,
                                            path=PATH_NAME))
        return outputs

    def _fit_cap(self, prompt: Sequence[int], cap: int, info: ServerInfo) -> int:
        """Check a row before it goes out (a token-id prompt outside the vocabulary can kill a vLLM engine) and
        clamp its cap to the server's context in whole groups."""
        if not prompt:
            raise GenerationRequestError("a prompt is empty; every prompt needs at least one token id.")
        if min(prompt) < 0 or max(prompt) >= TEXT_VOCAB_SIZE:
            raise GenerationRequestError(f"a prompt holds ids outside the vocabulary [0, {TEXT_VOCAB_SIZE}).")
        if cap < 1:
            raise GenerationRequestError(f"max_new_tokens is {cap}; it must be at least 1.")
        if info.max_model_len and len(prompt) + cap > info.max_model_len:
            room = (info.max_model_len - len(prompt)) // TOKENS_PER_GROUP * TOKENS_PER_GROUP
            if room < TOKENS_PER_GROUP:
                raise RemoteLMRequestError(
                    f"The prompt ({len(prompt)} tokens) leaves no room in the LM server's {info.max_model_len}-token "
                    "context: start the server with a larger --max-model-len (8192 holds any 30 s input).")
            logger.warning("LM server context is %d tokens: cap %d lowered to %d.", info.max_model_len, cap, room)
            cap = room
        return cap

    def _run_row(self, row: _Row, sampling: SamplingConfig, info: ServerInfo, canceller: Canceller,
                 started: float) -> None:
        body = completion_body(info.model, row.prompt, row.cap, sampling, row.seed)

        def attempt() -> None:
            row.tokens = []  # a retry starts over; the seed makes it draw the same ids again
            row.finish = None
            for event in self.transport.stream(COMPLETIONS_PATH, body, canceller):
                for choice in event.get("choices") or ():
                    ids = choice.get("token_ids")
                    if ids is None:
                        raise RemoteLMWrongServer("The LM server streams no token ids (needs return_token_ids).")
                    if ids and row.first_token_s is None:
                        row.first_token_s = time.perf_counter() - started
                    row.tokens = row.tokens + [int(t) for t in ids]
                    if choice.get("finish_reason"):
                        row.finish = choice["finish_reason"]

        try:
            self.transport.with_retries(attempt, canceller)
        except Cancelled:
            row.finish = None

    @staticmethod
    def _watch(pending: dict, rows: list[_Row], canceller: Canceller, progress: ProgressCallback | None) -> None:
        """Report progress from the calling thread until every row is done; cancel on request."""
        total = max(r.cap for r in rows)
        last = -1
        waiting = set(pending)
        try:
            while waiting:
                done, waiting = futures.wait(waiting, timeout=PROGRESS_POLL_S, return_when=futures.FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()
                if progress is None or canceller.cancelled:
                    continue
                unfinished = [len(pending[f].tokens) for f in waiting]
                step = min(unfinished) if unfinished else max(len(r.tokens) for r in rows)
                if step != last:
                    last = step
                    if progress(Progress(stage="generate", done=min(step, total), total=total)):
                        logger.info("Remote generation interrupted: closing %d streams", len(waiting))
                        canceller.cancel()
        except BaseException:
            canceller.cancel()  # ComfyUI's Cancel raises from the callback: abort the server's requests too
            futures.wait(waiting, timeout=CANCEL_GRACE_S)
            raise


def open_remote_lm(config: RemoteLMConfig) -> RemoteLM:
    """A connected remote LM (the handshake has passed)."""
    lm = RemoteLM(config)
    lm.connect()
    return lm
