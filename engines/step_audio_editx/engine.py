"""StepAudioEditX: the one engine every caller (nodes, CLI, post-processor, benchmarks) runs the model through.

Data path of one pass: clip -> ``FrontEnd`` (cached ``PromptContext``: LM audio ids, prompt mel, speaker
embedding) -> ``prompts`` (chat-layout ids) -> Step1 ``generate`` (batched, constrained, seeded) -> audio
ids -> ``Token2Wav`` (flow + HiFT, batched) -> 24 kHz waveform.

Batches are real batches: one front-end pass over all new clips, one generate per length group, one
decode; an edit's iterations run as batch steps over the requests still active. With the same seeds a
batch generates the tokens the requests generate one by one; its waveforms equal theirs up to float
rounding (the batched decoder's kernels sum in another order; see the README).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import torch

from .constants import AUDIO_TOKENS_PER_SECOND, MAX_CONTEXT_TOKENS, OFFLOAD_CHOICES, OUTPUT_SAMPLE_RATE, TOKENS_PER_GROUP
from .decoder.token2wav import Token2Wav, Token2WavInput
from .asr import Transcriber, Transcript
from .frontend.audio import resample, to_mono
from .frontend.context import FrontEnd, PromptContext, clip_digest
from .frontend.offload import offload_wanted
from .frontend.paraformer import Vq02Tokenizer
from .frontend.semantic import Vq06Tokenizer
from .frontend.speaker import SpeakerEncoder
from .lm.backend import LMBackend, LocalLM
from .lm.generation import GenerationOutput, generate
from .lm.remote.config import RemoteLMConfig, remote_lm_config
from .long_form import fill_clone_texts, run_edits
from .lm.quant.loading import scheme_for_choice
from .model_files import ModelFolders, resolve_model_folders
from .model_loader import choose_dtype, load_step1, resolve_device
from .prompts import build_clone_prompt, build_edit_prompt, clone_speaker_name
from .text_tokenizer import TextTokenizer
from .token_budget import estimate_clone_tokens, estimate_edit_tokens
from .types import (
    AudioResult,
    CloneRequest,
    EditRequest,
    GenerationSettings,
    PassResult,
    Progress,
    ProgressCallback,
    StopReason,
    Timings,
)
from .request_checks import check_clone_request, check_edit_request
from .vocabulary import WEIGHTS_RELEASE_CURRENT, check_weights_release

logger = logging.getLogger(__name__)

# What a front end or prompt step raises for audio it cannot take (kaldi asserts on too-short frames).
_PASS_ERRORS = (ValueError, RuntimeError, AssertionError)
PASS_CACHE_SIZE = 128  # finished edit passes kept per engine (lowering n_iterations is free)
LENGTH_GROUP_RATIO = 1.5  # prompts up to this much longer than the shortest of a group share its batch
MAX_GENERATE_BATCH = 16


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how the model is loaded (a change means a new engine)."""

    editx_dir: Optional[str] = None  # the Step-Audio-EditX folder; None -> search_roots
    tokenizer_dir: Optional[str] = None  # the Step-Audio-Tokenizer folder; None -> beside editx / search_roots
    search_roots: tuple[str, ...] = ()  # e.g. ComfyUI's models/TTS folders
    download: bool = False  # fetch missing files from the hub
    device: str = "auto"
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    attention: str = "auto"  # auto | sdpa | xformers | flex_attention | eager
    fast_decode: bool = True  # static KV cache + compiled / CUDA-graph decode step where available
    # Which official weights the folder holds (same hub name): "2026-01" (a download today) or "2025-11"
    # (the first release). Decides the spelling of non-verbal tags written into prompts ([laugh] vs [Laughter]).
    weights_release: str = WEIGHTS_RELEASE_CURRENT
    quantize: str = "none"  # none | int8 | int4: the LM's projections quantized on load (weight-only, group 128)
    # auto | on | off: the front end's vq02 / vq06 encoders (~1.1 GiB) kept in host memory between uses
    # (bit-identical results, ~0.1 s per new clip); auto = on with quantized LM weights on a GPU
    offload_frontend: str = "auto"
    # "" = Step1 runs here; a vLLM server URL (or a RemoteLMConfig) = it runs there and is not loaded here
    lm_server: "str | RemoteLMConfig" = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights_release", check_weights_release(self.weights_release))
        scheme_for_choice(self.quantize)  # an unknown choice fails here, naming the valid ones
        if self.offload_frontend not in OFFLOAD_CHOICES:
            raise ValueError(f"offload_frontend must be one of {', '.join(OFFLOAD_CHOICES)}, "
                             f"got {self.offload_frontend!r}")
        object.__setattr__(self, "lm_server", remote_lm_config(self.lm_server) or "")

    @property
    def remote_lm(self) -> Optional[RemoteLMConfig]:
        return self.lm_server or None


@dataclass
class _Parts:
    folders: ModelFolders
    device: torch.device
    dtype: torch.dtype
    tokenizer: TextTokenizer
    lm: Optional[torch.nn.Module]  # None when the LM runs on a server (``remote``)
    token2wav: Token2Wav
    frontend: FrontEnd
    remote: Optional[LMBackend] = None
    transcriber: Optional[Transcriber] = None  # loaded on first need (shares vq02's encoder)


@dataclass
class _Job:
    """One row of a pass: what to prompt, how far it may generate, which context decodes it."""

    prompt: list[int]
    cap: int
    seed: int
    context: PromptContext


def derive_seed(seed: int, *parts: object) -> int:
    """A reproducible 63-bit seed for one stage of a seeded request (iteration k, decoder noise ...)."""
    digest = hashlib.sha256(repr((int(seed),) + parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Indices grouped so a batch never pads a prompt to more than LENGTH_GROUP_RATIO times its length."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < MAX_GENERATE_BATCH and lengths[i] <= LENGTH_GROUP_RATIO * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class StepAudioEditX:
    """Loads the parts once and runs clone / edit / batch_edit. Thread-safe (one call at a time)."""

    def __init__(self, config: EngineConfig = EngineConfig()):
        self.config = config
        self._parts: Optional[_Parts] = None
        self._lock = threading.RLock()
        self._passes: OrderedDict[str, PassResult] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------------------
    def load(self) -> "StepAudioEditX":
        """Load every part onto the device (idempotent)."""
        with self._lock:
            if self._parts is None:
                self._parts = self._load()
            return self

    def _load(self) -> _Parts:
        started = time.perf_counter()
        c = self.config
        folders = resolve_model_folders(c.search_roots, c.editx_dir, c.tokenizer_dir, download=c.download,
                                        lm_weights=c.remote_lm is None)
        device = resolve_device(c.device)
        dtype = choose_dtype(device, c.dtype)
        tokenizer = TextTokenizer.from_folder(folders.text_tokenizer)
        lm = remote = None
        if c.remote_lm is not None:  # an absent or wrong server fails the load, before any work
            from .lm.remote.client import open_remote_lm
            remote = open_remote_lm(c.remote_lm)
        else:
            lm = load_step1(folders.editx, device=device, dtype=dtype, attn_implementation=c.attention,
                            quantize=c.quantize)
        token2wav = Token2Wav.from_folder(folders.cosyvoice, device=device, dtype=c.dtype)
        frontend = FrontEnd(
            Vq02Tokenizer.from_folder(folders.tokenizer, device=device),
            Vq06Tokenizer.from_folder(folders.tokenizer, device=device),
            SpeakerEncoder.from_folder(folders.cosyvoice),
            token2wav.prompt_mel,
            device=device,
            offload=offload_wanted(c.offload_frontend, device, lm),
        )
        logger.info("Step-Audio-EditX loaded from %s on %s (%s) in %.1f s", folders.editx, device,
                    str(dtype).replace("torch.", ""), time.perf_counter() - started)
        return _Parts(folders, device, dtype, tokenizer, lm, token2wav, frontend, remote=remote)

    @property
    def loaded(self) -> bool:
        return self._parts is not None

    @property
    def device(self) -> torch.device:
        parts = self._parts
        return parts.device if parts is not None else resolve_device(self.config.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        """The torch modules holding weights (for host memory managers such as ComfyUI's)."""
        parts = self.load()._parts
        asr = parts.transcriber.modules() if parts.transcriber is not None else {}
        lm = {"lm": parts.lm} if parts.lm is not None else {}
        return {**lm, **parts.token2wav.modules(), **parts.frontend.modules(), **asr}

    def to(self, device: torch.device | str) -> "StepAudioEditX":
        """Move every part (offload to the CPU, or back to the GPU); cheap when already there."""
        device = torch.device(device)
        with self._lock:
            parts = self.load()._parts
            if parts.device == device:
                return self
            if parts.lm is not None:
                parts.lm.to(device)
            parts.token2wav.to(device)
            parts.frontend.to(device)
            if parts.transcriber is not None:
                parts.transcriber.to(device)
            parts.device = device
            logger.info("Step-Audio-EditX moved to %s", device)
            return self

    def unload(self) -> None:
        """Drop the weights and caches; the next call loads again."""
        with self._lock:
            self._parts = None
            self._passes.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- work ------------------------------------------------------------------------------------
    def transcribe(self, clips: Sequence[tuple[torch.Tensor, int]]) -> list[Transcript]:
        """What each clip says (any rate, mono or [C, T]), with word timestamps; one batched pass."""
        with self._lock:
            parts = self.load()._parts
            if parts.transcriber is None:
                started = time.perf_counter()
                parts.transcriber = Transcriber.from_folder(parts.folders.tokenizer, device=parts.device,
                                                            encoder=parts.frontend.vq02.encoder)
                logger.info("Transcriber ready in %.1f s", time.perf_counter() - started)
            with parts.frontend.resident():
                return parts.transcriber.transcribe_audio(clips)

    def clone(self, request: CloneRequest, settings: GenerationSettings = GenerationSettings(),
              progress: Optional[ProgressCallback] = None) -> AudioResult:
        return self.batch_clone([request], settings, progress)[0]

    def edit(self, request: EditRequest, settings: GenerationSettings = GenerationSettings(),
             progress: Optional[ProgressCallback] = None) -> AudioResult:
        return self.batch_edit([request], settings, progress)[0]

    def batch_clone(self, requests: Sequence[CloneRequest], settings: GenerationSettings = GenerationSettings(),
                    progress: Optional[ProgressCallback] = None) -> list[AudioResult]:
        """Speak each request's text in the voice of its prompt clip; one batched pass for all."""
        if not requests:
            return []
        for n, r in enumerate(requests):
            check_clone_request(r, f"clone request {n + 1} of {len(requests)}: " if len(requests) > 1 else "")
        given = [bool((r.prompt_text or "").strip()) for r in requests]
        requests = fill_clone_texts(requests, self.transcribe)
        with self._lock, torch.inference_mode():
            parts = self.load()._parts
            started = time.perf_counter()
            contexts = parts.frontend.encode([(r.prompt_audio, r.prompt_sample_rate) for r in requests])
            frontend_s = time.perf_counter() - started
            jobs = []
            for r, ctx in zip(requests, contexts):
                prompt = build_clone_prompt(parts.tokenizer, r.prompt_text, ctx.audio_ids, r.target_text,
                                            speaker=clone_speaker_name(r.prompt_text, r.prompt_audio),
                                            weights_release=self.config.weights_release)
                budget = self._room(prompt, settings)
                cap = estimate_clone_tokens(r.target_text, max_tokens=budget) if settings.dynamic_tokens else budget
                jobs.append(_Job(prompt, cap, derive_seed(r.seed, "clone"), ctx))
            passes = self._run_pass(parts, jobs, settings, progress, call=1, calls=1)
            results = []
            for p in passes:
                p.timings.frontend_s = frontend_s / len(passes)
                p.timings.total_s += p.timings.frontend_s
                results.append(AudioResult(p.waveform, OUTPUT_SAMPLE_RATE, [p], replace(p.timings)))
            for res, r, typed in zip(results, requests, given):
                res.transcript, res.transcribed = r.prompt_text, not typed
            return results

    def batch_edit(self, requests: Sequence[EditRequest], settings: GenerationSettings = GenerationSettings(),
                   progress: Optional[ProgressCallback] = None) -> list[AudioResult]:
        """Apply each request's edit ``n_iterations`` times. A missing transcript is recognised; clips over
        30 s are cut into pieces between words and joined afterwards (``long_form``). Every iteration is
        one batched pass over all pieces still active."""
        if not requests:
            return []
        requests = [self._check_edit(n, r, len(requests), self.config.weights_release)  # fail before any work
                    for n, r in enumerate(requests)]
        return run_edits(requests, settings, progress, self.transcribe, self._edit_pieces)

    def _edit_pieces(self, requests: Sequence[EditRequest], settings: GenerationSettings,
                     progress: Optional[ProgressCallback]) -> list[AudioResult]:
        """The batch of clips of at most 30 s, each with its transcript. Finished passes are cached, so
        lowering ``n_iterations`` is free."""
        if not requests:
            return []
        checked = [self._check_edit(n, r, len(requests), self.config.weights_release) for n, r in enumerate(requests)]
        with self._lock, torch.inference_mode():
            parts = self.load()._parts
            rounds = max(r.n_iterations for r in checked)
            current = [(r.audio, r.sample_rate) for r in checked]
            passes: list[list[PassResult]] = [[] for _ in checked]
            chain = [self._request_key(r, settings) for r in checked]
            warnings: list[list[str]] = [[] for _ in checked]
            for it in range(rounds):
                active = [i for i, r in enumerate(checked) if r.n_iterations > it]
                keys = {i: hashlib.sha256(f"{chain[i]}|{it}".encode()).hexdigest() for i in active}
                todo = [i for i in active if keys[i] not in self._passes]
                fresh: dict[int, PassResult] = {}
                if todo:
                    started = time.perf_counter()
                    jobs, failed = self._prepare_pass(parts, checked, todo, current, settings, it)
                    frontend_s = (time.perf_counter() - started) / len(todo)
                    for i, reason in failed.items():  # fed-back audio this pass cannot take: keep what is done
                        warnings[i].append(f"WARNING: pass {it + 1} of {checked[i].n_iterations} could not run "
                                           f"({reason.rstrip('.')}); the result is the {it} pass(es) before it.")
                        logger.warning("edit request %d: %s", i + 1, warnings[i][-1])
                        checked[i] = replace(checked[i], n_iterations=it)
                    active = [i for i in active if i not in failed]
                    rows = list(jobs)
                    if rows:
                        fresh = dict(zip(rows, self._run_pass(parts, [jobs[i] for i in rows], settings, progress,
                                                              call=it + 1, calls=rounds)))
                    for i, p in fresh.items():
                        p.timings.frontend_s = frontend_s
                        p.timings.total_s += frontend_s
                        if p.stop_reason is not StopReason.INTERRUPTED:  # a cut pass is not a result to reuse
                            self._remember(keys[i], p)
                for i in active:
                    p = fresh.get(i)
                    if p is None:
                        p = self._passes[keys[i]]
                        self._passes.move_to_end(keys[i])
                    passes[i].append(p)
                    current[i] = (p.waveform, OUTPUT_SAMPLE_RATE)
                    if p.stop_reason is StopReason.INTERRUPTED:
                        checked[i] = replace(checked[i], n_iterations=it + 1)  # no further passes on a cut output
            results = []
            for r, ps, notes in zip(checked, passes, warnings):
                total = Timings()
                for p in ps:
                    total.add(p.timings)
                waveform = ps[-1].waveform if ps else resample(to_mono(r.audio).float(), r.sample_rate,
                                                                OUTPUT_SAMPLE_RATE)
                results.append(AudioResult(waveform, OUTPUT_SAMPLE_RATE, ps, total, notes))
            return results

    def clear_cache(self) -> None:
        """Forget cached edit passes and prompt contexts (results stay reproducible from seeds)."""
        with self._lock:
            self._passes.clear()
            if self._parts is not None:
                self._parts.frontend.clear_cache()

    # -- internals -------------------------------------------------------------------------------
    @staticmethod
    def _check_edit(n: int, r: EditRequest, count: int, weights_release: str = WEIGHTS_RELEASE_CURRENT) -> EditRequest:
        """Validate everything before any work, so a bad row fails the batch before it costs anything."""
        return check_edit_request(r, f"edit request {n + 1} of {count}: " if count > 1 else "",
                                  weights_release=weights_release)

    @staticmethod
    def _request_key(r: EditRequest, settings: GenerationSettings) -> str:
        """Everything that decides a pass's output (the sampling settings and token cap included)."""
        return hashlib.sha256(repr((clip_digest(torch.as_tensor(r.audio), r.sample_rate), r.audio_text, r.edit_type,
                                    r.edit_value, r.new_text, r.seed, settings)).encode()).hexdigest()

    def _remember(self, key: str, p: PassResult) -> None:
        self._passes[key] = p
        while len(self._passes) > PASS_CACHE_SIZE:
            self._passes.popitem(last=False)

    @staticmethod
    def _room(prompt: Sequence[int], settings: GenerationSettings) -> int:
        """New tokens the context still holds after the prompt (whole groups), clamping a fixed cap to it."""
        room = (MAX_CONTEXT_TOKENS - len(prompt)) // TOKENS_PER_GROUP * TOKENS_PER_GROUP
        if room < TOKENS_PER_GROUP:
            raise ValueError(f"The prompt ({len(prompt)} tokens) leaves no room in the {MAX_CONTEXT_TOKENS}-token "
                             "context: use a shorter clip (<= 30 s) or text.")
        if not settings.dynamic_tokens and settings.max_new_tokens > room:
            logger.warning("max_new_tokens=%d is more than the context leaves (%d); using %d.",
                           settings.max_new_tokens, room, room)
        return room if settings.dynamic_tokens else min(settings.max_new_tokens, room)

    def _prepare_pass(self, parts: _Parts, checked: Sequence[EditRequest], todo: Sequence[int], current: Sequence,
                      settings: GenerationSettings, it: int) -> tuple[dict[int, _Job], dict[int, str]]:
        """Jobs of pass ``it`` for rows ``todo``, and why the rows whose audio the pack fed back (pass 2+, or
        ``EditRequest.intermediate``) cannot run. Such audio is never held to the user-input limits; a
        problem with it ends that row, while a problem with user input is an error for the whole call."""
        fed_back = {i: it > 0 or checked[i].intermediate for i in todo}
        clips = [current[i] for i in todo]
        try:
            contexts: list = parts.frontend.encode(clips, [not fed_back[i] for i in todo])
        except _PASS_ERRORS:
            if not any(fed_back.values()):
                raise
            contexts = [self._encode_or_reason(parts, clip, fed_back[i]) for i, clip in zip(todo, clips)]
        jobs: dict[int, _Job] = {}
        failed: dict[int, str] = {}
        for i, ctx in zip(todo, contexts):
            try:
                if isinstance(ctx, Exception):
                    raise ctx
                jobs[i] = self._edit_job(parts, checked[i], ctx, settings, it)
            except _PASS_ERRORS as exc:
                if not fed_back[i]:
                    raise
                failed[i] = str(exc)
        return jobs, failed

    @staticmethod
    def _encode_or_reason(parts: _Parts, clip, fed_back: bool):
        try:
            return parts.frontend.encode([clip], user_input=not fed_back)[0]
        except _PASS_ERRORS as exc:
            if not fed_back:
                raise
            return exc

    @staticmethod
    def _pass_transcript(r: EditRequest, it: int) -> str:
        """What the audio of pass ``it`` says. A paralinguistic pass adds the tagged sounds, so from the
        second pass on the official loop gives the tagged text as the transcript; other edits keep the words."""
        if r.edit_type == "paralinguistic" and it > 0:
            return r.new_text
        return r.audio_text

    def _edit_job(self, parts: _Parts, r: EditRequest, ctx: PromptContext, settings: GenerationSettings, it: int) -> _Job:
        prompt = build_edit_prompt(parts.tokenizer, r.edit_type, r.edit_value, self._pass_transcript(r, it),
                                   ctx.audio_ids, r.new_text, self.config.weights_release)
        budget = self._room(prompt, settings)
        if settings.dynamic_tokens:
            cap = estimate_edit_tokens(len(ctx.audio_ids), r.edit_type, r.edit_value, r.new_text, max_tokens=budget)
        else:
            cap = budget
        return _Job(prompt, cap, derive_seed(r.seed, "edit", it), ctx)

    def _run_pass(self, parts: _Parts, jobs: Sequence[_Job], settings: GenerationSettings,
                  progress: Optional[ProgressCallback], call: int, calls: int) -> list[PassResult]:
        """Generate for every job (batched by prompt length) and decode them all in one batch."""
        report = _stage_reporter(progress, call, calls)
        outputs: list[Optional[GenerationOutput]] = [None] * len(jobs)
        gen_s: list[tuple[float, float]] = [(0.0, 0.0)] * len(jobs)
        lm = parts.remote or LocalLM(parts.lm, self.config.fast_decode, generate)  # generate: looked up per call
        groups = _length_groups([len(j.prompt) for j in jobs]) if lm.group_by_length else [list(range(len(jobs)))]
        for group in groups:
            outs = lm.generate([jobs[i].prompt for i in group], [jobs[i].cap for i in group], settings.sampling,
                               [jobs[i].seed for i in group], progress=report("generate"))
            for i, out in zip(group, outs):
                outputs[i] = out
                gen_s[i] = (out.prefill_s / len(group), out.decode_s / len(group))
        waveforms, flow_s, vocoder_s = self._decode(parts, jobs, outputs, report)
        passes = []
        for job, out, wav, (prefill_s, decode_s) in zip(jobs, outputs, waveforms, gen_s):
            timings = Timings(prefill_s=prefill_s, decode_s=decode_s, flow_s=flow_s / len(jobs),
                              vocoder_s=vocoder_s / len(jobs))
            timings.total_s = prefill_s + decode_s + timings.decoder_s
            passes.append(PassResult(wav, len(job.prompt), len(out.tokens), job.cap, out.stop_reason, timings,
                                     tuple(out.tokens)))
            if out.stop_reason.truncated:  # callers warn once per result (CLI line, node info), naming the file
                logger.info("Generation hit its cap of %d tokens (%.1f s of audio): the output may be cut short.",
                            job.cap, job.cap / AUDIO_TOKENS_PER_SECOND)
            if not out.tokens and out.stop_reason is not StopReason.INTERRUPTED:
                logger.warning("The model ended without producing any audio (stop: %s); this result is empty.",
                               out.stop_reason.value)
        return passes

    @staticmethod
    def _decode(parts: _Parts, jobs: Sequence[_Job], outputs: Sequence[GenerationOutput],
                report) -> tuple[list[torch.Tensor], float, float]:
        """Waveforms of every job (empty where nothing was generated), flow seconds, vocoder seconds."""
        rows = [i for i, out in enumerate(outputs) if out.tokens]
        waveforms = [torch.zeros(0)] * len(jobs)
        flow_s = vocoder_s = 0.0
        if rows:
            t2w = parts.token2wav
            inputs = [Token2WavInput(outputs[i].tokens, jobs[i].context.audio_ids, jobs[i].context.prompt_mel,
                                     jobs[i].context.speaker_embedding) for i in rows]
            generators = [torch.Generator(device=t2w.device).manual_seed(derive_seed(jobs[i].seed, "decoder"))
                          for i in rows]
            started = time.perf_counter()
            mels = t2w.run_flow(t2w.prepare(inputs), generators)
            flow_s = _synced(t2w.device) - started
            decoded = t2w.run_vocoder(mels, generators)
            waveforms_rows = [d.waveform.detach().to("cpu", torch.float32) for d in decoded]
            vocoder_s = time.perf_counter() - started - flow_s
            for i, wav in zip(rows, waveforms_rows):
                waveforms[i] = wav
        hook = report("decode")
        if hook is not None:
            hook(Progress("decode", len(jobs), len(jobs)))
        return waveforms, flow_s, vocoder_s


def _synced(device: torch.device) -> float:
    """perf_counter after the device finished its queued work (stage timings on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _stage_reporter(progress: Optional[ProgressCallback], call: int, calls: int) -> Callable[[str], Optional[ProgressCallback]]:
    """Per-stage callbacks that stamp the call number on every Progress the stage reports."""
    def for_stage(stage: str) -> Optional[ProgressCallback]:
        if progress is None:
            return None
        return lambda p: progress(replace(p, stage=stage, call=call, calls=calls))
    return for_stage
