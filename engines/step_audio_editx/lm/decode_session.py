"""The fast Step1 decoder: static KV cache, fused weights and kernels, CUDA-graph replay, in-graph sampling.

One ``DecodeSession`` belongs to one loaded model (``generation.get_decode_session``) and keeps what is
expensive to build across calls: the fused projections, the static KV cache and per-row state (grown in
buckets, reused while a request fits), and one captured CUDA graph per (batch bucket, sampling settings).

Cache layout: row r's prompt fills slots ``[0, n_r)`` and each generated token takes the next slot, so
rows of any lengths share one cache without padding, a key's slot is its position, and attention reads
only ``[0, kv_len[r])`` (chunks past it return at once). Prefill runs the model's own forward per row
(chunked) straight into the row's cache slice.

A step (the captured unit): embed each row's pending id, run the layers with one query per row (writing
its key/value), the LM head (only the <|EOT|> + audio rows when the audio constraint is on: identical
choice, 15x fewer rows), choose the next id (``sampling`` semantics, counter-based noise) and commit it
(``decode_state.commit``). The host only replays graphs; every ``POLL_STEPS`` steps it copies the
``active`` flags to pinned memory asynchronously and reads the copy made ``POLL_STEPS`` steps earlier,
so stopping never stalls the GPU. When at most half the rows of a bucket still run, the running rows are
moved to the front (state and cache) and the next smaller bucket's graph takes over.

On CPU (or without CUDA graphs) the same step runs eagerly with the torch reference ops of
``decode_ops``; this is what the CPU tests compare against the plain path.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..constants import EOT_ID, PAD_ID
from ..triton_import import TRITON_IMPORT_ERROR
from ..types import Progress, ProgressCallback, SamplingConfig, StopReason
from . import decode_ops as ref_ops
from . import persistent_layer, triton_attention, triton_decode, triton_pdl, triton_sampler
from .decode_linears import LinearChoice, ResidualStream, select_linears
from .decode_state import DecodeState, SamplerTables, choose_and_commit
from .fused_weights import DecodeWeights, audio_vocab_ids, fingerprint_of, fuse_step1_projections, projection_tensor
from .quant.linear import QuantMatrix

logger = logging.getLogger(__name__)

KV_LENGTH_BUCKET = 512  # cache slots are allocated in multiples of this (fewer re-captures)
OUT_COLS_BUCKET = 512  # output buffer columns likewise
PREFILL_CHUNK_TOKENS = 1024  # prompt tokens per prefill forward (bounds the dense bias memory)
PREFILL_BATCH_TOKENS = 4096  # rows x chunk tokens per prefill forward (bounds the activation memory)
PREFILL_MIN_CHUNK = 128
POLL_STEPS = 8  # steps between asynchronous reads of the stop flags
GRAPH_WARMUP_STEPS = 2  # eager runs before a capture (kernel compilation, cuBLAS workspaces)
# Programmatic dependent launch by default from this batch bucket on. Measured on the H200 (2026-12-04,
# docs/performance.md): batch 8 / 16 +5.6 % / +4.0 % tokens/s, batch 1 -1.9 % (its one-row GEMV chain
# gains nothing), so batch 1 keeps the plain launches.
PDL_AUTO_MIN_ROWS = 2


def batch_bucket(rows: int) -> int:
    """Rows are padded to the next power of two (one graph per bucket)."""
    return 1 << max(0, (rows - 1).bit_length())


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass
class DecodeOptions:
    """How the session runs; the defaults pick the fastest available."""

    use_graphs: bool | None = None  # None: on CUDA
    use_triton: bool | None = None  # None: on CUDA when triton imports
    linear: str = "auto"  # "auto": time cuBLAS and the Triton matmuls per matrix; "cublas"; "triton"
    pdl: bool | None = None  # programmatic dependent launch (triton_pdl); None: where supported, from batch 2
    merge_ahead: bool = True  # attention's merge reads partials ahead (same arithmetic); False: the path before
    # each layer as one persistent launch at 1-16 rows (``persistent_layer``; bf16 / fp16 / fp32 weights).
    # Opt-in: not yet timed on a GPU against the five launches per layer it replaces.
    persistent: bool = False


@dataclass
class CallResult:
    """What a session call returns per request row, plus the call's timings."""

    tokens: list[list[int]]
    stop_reasons: list[StopReason]
    prefill_s: float
    decode_s: float
    warmup_s: float
    steps: int
    buckets: list[int] = field(default_factory=list)


class DecodeSession:
    """Static-cache, graph-replayed decoding for one ``Step1ForCausalLM`` on its current device and dtype."""

    def __init__(self, model, options: DecodeOptions | None = None) -> None:
        self.options = options or DecodeOptions()
        self._model = weakref.ref(model)  # the model owns the session: no reference cycle keeping VRAM alive
        self.weights: DecodeWeights = fuse_step1_projections(model)
        self.device = self.weights.embed.device
        self.dtype = self.weights.embed.dtype
        self._fingerprint = self.weights.fingerprint()
        cuda = self.device.type == "cuda"
        self.use_graphs = cuda if self.options.use_graphs is None else bool(self.options.use_graphs) and cuda
        want_triton = cuda if self.options.use_triton is None else bool(self.options.use_triton)
        self.use_triton = want_triton and cuda and triton_decode.available()
        if want_triton and cuda and not self.use_triton:
            logger.warning("Triton is unavailable (%s): fast decoding uses torch ops inside the CUDA graph "
                           "(slower)", TRITON_IMPORT_ERROR)
        self.pdl_min_rows: int | None = None  # buckets of at least this many rows launch as PDL; None: none
        if self.use_triton and triton_pdl.capable(self.device):
            if self.options.pdl is None and triton_pdl.supported(self.device):
                self.pdl_min_rows = PDL_AUTO_MIN_ROWS
            elif self.options.pdl:
                self.pdl_min_rows = 1
        self.persistent = (self.options.persistent and self.use_triton and self.use_graphs
                           and not isinstance(self.weights.qkv[0], QuantMatrix))
        self._persistent: dict[int, persistent_layer.PersistentLayers] = {}  # per batch bucket
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.state: DecodeState | None = None
        self.capacity = (0, 0, 0, 0)  # slot rows, cache slots, output rows, output cols
        self._graphs: dict[tuple[int, SamplingConfig], torch.cuda.CUDAGraph] = {}
        self._pool = None
        self._workspaces: dict[int, triton_attention.AttentionWorkspace] = {}
        self._linear_choice: dict[int, dict[str, LinearChoice]] = {}
        self._tables: dict[bool, SamplerTables] = {}
        self._audio_ids = audio_vocab_ids(self.weights.head.shape[0], self.device)
        self.warmup_s = 0.0

    # --- lifetime -------------------------------------------------------------------------------

    @property
    def model(self):
        model = self._model()
        if model is None:
            raise RuntimeError("the Step1 model of this decode session was deleted")
        return model

    def matches(self, model) -> bool:
        """True while the model's weights are still the ones this session captured (same tensors)."""
        if model is not self._model():
            return False
        decoder = model.model
        layers = decoder.layers
        current = fingerprint_of(decoder.embed_tokens.weight, model.lm_head.weight,
                                 *(projection_tensor(layer.self_attn.q_proj) for layer in layers),
                                 *(projection_tensor(layer.mlp.gate_proj) for layer in layers),
                                 *(projection_tensor(layer.self_attn.o_proj) for layer in layers),
                                 *(projection_tensor(layer.mlp.down_proj) for layer in layers))
        return current == self._fingerprint

    def release(self) -> None:
        """Drop graphs, caches and buffers (the weights stay fused in the model)."""
        self._graphs.clear()
        self._workspaces.clear()
        self._tables.clear()
        self._persistent.clear()
        self.kv = []
        self.state = None
        self._pool = None
        self.capacity = (0, 0, 0, 0)

    @property
    def use_pdl(self) -> bool:
        """True when some batch bucket launches its Triton kernels as programmatic dependents."""
        return self.pdl_min_rows is not None

    def persistent_for(self, rows: int) -> bool:
        return self.persistent and rows <= triton_decode.MIN_DOT_ROWS

    def pdl_for(self, rows: int) -> bool:
        return self.pdl_min_rows is not None and rows >= self.pdl_min_rows

    @property
    def mode(self) -> str:
        if self.use_graphs:
            return ("cuda-graph" + ("+triton" if self.use_triton else "") + ("+pdl" if self.use_pdl else "")
                    + ("+persistent" if self.persistent else ""))
        return "static" + ("+triton" if self.use_triton else "")

    # --- buffers ----------------------------------------------------------------------------------

    def _ensure_capacity(self, slot_rows: int, cache_slots: int, out_rows: int, out_cols: int) -> None:
        """Reuse the buffers when this request fits; otherwise size them for THIS request (not the largest
        ever seen): a 30 s edit after a batch of 16 must not keep a 16-row cache of its length."""
        have = self.capacity
        want = (slot_rows, round_up(cache_slots, KV_LENGTH_BUCKET), out_rows, round_up(out_cols, OUT_COLS_BUCKET))
        if all(h >= w for h, w in zip(have, want)):
            return
        self.release()
        w = self.weights
        shape = (want[0], w.shape.num_groups, want[1], w.shape.head_dim)
        self.kv = [(torch.zeros(shape, device=self.device, dtype=self.dtype),
                    torch.zeros(shape, device=self.device, dtype=self.dtype)) for _ in range(w.num_layers)]
        self.state = DecodeState.allocate(want[0], want[2], want[3], w.embed.shape[1], self.device, self.dtype)
        self.capacity = want
        logger.info("Step1 decode buffers: %d rows x %d cache slots (%.2f GiB KV cache)", want[0], want[1],
                    2 * sum(k.numel() * k.element_size() for k, _ in self.kv) / 1024 ** 3)

    def tables(self, constrain: bool) -> SamplerTables:
        if constrain not in self._tables:
            ids = self._audio_ids if constrain else None
            self._tables[constrain] = SamplerTables.build(self.weights.head, ids, constrain)
        return self._tables[constrain]

    def _workspace(self, rows: int) -> triton_attention.AttentionWorkspace:
        if rows not in self._workspaces:
            self._workspaces[rows] = triton_attention.AttentionWorkspace(rows, self.weights.shape, self.capacity[1],
                                                                      self.device)
        return self._workspaces[rows]

    # --- one step ---------------------------------------------------------------------------------

    def _layers(self, tokens: torch.Tensor, kv_len: torch.Tensor, rows: int, kv_limit: int | None) -> torch.Tensor:
        """Ids [B] -> final normed hidden [B, C]; writes each running row's K/V at ``kv_len - 1``."""
        w = self.weights
        triton = self.use_triton
        if self.persistent_for(rows):
            if rows not in self._persistent:
                self._select_linears(rows)
                self._persistent[rows] = persistent_layer.build(w, rows, self._linear_choice[rows], self.device,
                                                                self.dtype)
            return persistent_layer.run_layers(self._persistent[rows], w, tokens, self.kv, kv_len,
                                               self._workspace(rows), self.options.merge_ahead)
        choice = self._linear_choice.get(rows, {}) if triton else {}
        cublas = LinearChoice()
        workspace = self._workspace(rows) if triton else None
        pdl = self.pdl_for(rows)
        stream = ResidualStream(F.embedding(tokens, w.embed), w.eps, triton, pdl)
        for i in range(w.num_layers):
            keys, values = self.kv[i]
            keys, values = keys[:rows], values[:rows]
            qkv = stream.normed_linear(w.input_norms[i], w.qkv[i], choice.get("qkv", cublas))
            if triton:
                attn = triton_attention.decode_attention(qkv, keys, values, kv_len, w.slopes, w.shape, workspace,
                                                      pdl=pdl, merge_ahead=self.options.merge_ahead)
            else:
                attn = ref_ops.decode_attention(qkv, keys, values, kv_len, w.slopes, w.shape, kv_limit)
            stream.residual_linear(attn, w.o[i], choice.get("o", cublas), swiglu=False)
            gate_up = stream.normed_linear(w.post_norms[i], w.gate_up[i], choice.get("gate_up", cublas))
            stream.residual_linear(gate_up, w.down[i], choice.get("down", cublas), swiglu=True)
        return stream.norm(w.final_norm)

    def _choose(self, hidden: torch.Tensor, state: DecodeState, config: SamplingConfig) -> None:
        """LM head + token choice + commit for a B-row view."""
        tables = self.tables(config.constrain_audio)
        logits = F.linear(hidden, tables.head)
        if self.use_triton:
            triton_sampler.sample_and_commit(logits, config, state, tables, pdl=self.pdl_for(hidden.shape[0]))
        else:
            choose_and_commit(logits, config, state, tables)

    def _step(self, rows: int, config: SamplingConfig, kv_limit: int | None) -> None:
        state = self.state.narrow(rows)  # kv_len was set by the previous commit
        hidden = self._layers(state.tokens, state.kv_len, rows, kv_limit)
        self._choose(hidden, state, config)

    # --- graphs -----------------------------------------------------------------------------------

    def _select_linears(self, rows: int) -> None:
        if rows not in self._linear_choice and self.use_triton:
            if self.persistent_for(rows):  # its own launches: timed without PDL, as it launches them
                self._linear_choice[rows] = select_linears(self.weights, rows, "persistent")
            else:
                self._linear_choice[rows] = select_linears(self.weights, rows, self.options.linear, self.pdl_for(rows))

    def _graph(self, rows: int, config: SamplingConfig) -> torch.cuda.CUDAGraph:
        key = (rows, config)
        if key in self._graphs:
            return self._graphs[key]
        start = time.perf_counter()
        self._select_linears(rows)
        state = self.state.narrow(rows)
        saved = state.active.clone(), state.kv_len.clone()
        state.active.zero_()  # warm-up and capture must not touch live rows: idle rows write nothing
        state.kv_len.zero_()
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(GRAPH_WARMUP_STEPS):
                    self._step(rows, config, None)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                self._step(rows, config, None)
        finally:
            state.active.copy_(saved[0])
            state.kv_len.copy_(saved[1])
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.warmup_s += elapsed
        self._graphs[key] = graph
        logger.info("Captured the Step1 decode step for batch %d (%s) in %.2f s", rows, _describe(config), elapsed)
        return graph

    def _prepare_graph(self, rows: int, config: SamplingConfig) -> None:
        """Capture the step. Where this GPU / install cannot, give up the most specific feature still on (the
        persistent layer kernel, programmatic dependent launch, the Triton kernels, then the graph itself),
        say so once in the log, and try again."""
        try:
            self._graph(rows, config)
        except Exception as exc:
            self._graphs.clear()
            self._linear_choice.clear()
            failed = self.mode
            if self.persistent_for(rows):
                self.persistent, instead = False, "launching each layer's kernels one by one"
                self._persistent.clear()
            elif self.use_pdl:
                self.pdl_min_rows, instead = None, "launching the kernels plainly (no PDL)"
            elif self.use_triton:
                self.use_triton, self.pdl_min_rows, instead = False, None, "using torch ops in the CUDA graph"
            else:
                self.use_graphs, instead = False, "decoding step by step without graphs"
            logger.warning("Step1 decode (%s) failed on %s (%s: %s); %s", failed, self.device, type(exc).__name__,
                           exc, instead)
            if self.use_graphs:
                self._prepare_graph(rows, config)

    # --- prefill ----------------------------------------------------------------------------------

    def _prefill(self, prompts: list[list[int]]) -> None:
        """All prompts through the model's own forward, right-padded into one batch, into their cache rows;
        each row's last hidden -> ``state.hidden``.

        Right padding is exact here: causal attention never lets a real token see the padding after it,
        and the padding's cache slots lie at or beyond the row's length, where decoding writes before it
        ever reads. Chunks of the prompt axis bound the dense bias and activation memory.
        """
        decoder = self.model.model
        count, longest = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((count, longest), PAD_ID, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, :len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        ids = ids.to(self.device)
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        chunk = min(PREFILL_CHUNK_TOKENS, max(PREFILL_MIN_CHUNK, PREFILL_BATCH_TOKENS // count))
        for start in range(0, longest, chunk):
            end = min(longest, start + chunk)
            views = [(k[:count, :, :end], v[:count, :, :end]) for k, v in self.kv]
            slots = torch.arange(start, end, device=self.device)
            hidden = decoder(ids[:, start:end], kv_buffers=views, kv_write_index=slots,
                             use_cache=False).last_hidden_state
            here = (last >= start) & (last < end)  # rows whose final prompt token is in this chunk
            picked = hidden[torch.arange(count, device=self.device), (last - start).clamp(0, end - start - 1)]
            self.state.hidden[:count] = torch.where(here[:, None], picked, self.state.hidden[:count])

    # --- a call -----------------------------------------------------------------------------------

    def run(self, prompts: list[list[int]], caps: list[int], config: SamplingConfig, seeds: list[int],
            progress: ProgressCallback | None = None) -> CallResult:
        """Generate for every prompt (ids) up to its cap; see ``generation.generate`` for the contract."""
        count = len(prompts)
        rows = batch_bucket(count)
        max_cap = max(caps)
        self._ensure_capacity(rows, max(len(p) + c for p, c in zip(prompts, caps)), count, max_cap)
        warm_before = self.warmup_s
        if self.use_graphs:
            self._prepare_graph(rows, config)
        state = self.state
        state.load_requests(prompts, caps, seeds, rows)
        self._sync()
        start = time.perf_counter()
        self._prefill(prompts)
        self._choose(state.hidden[:rows], state.narrow(rows), config)  # the first id of every row
        self._sync()
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        longest_prompt = max(len(p) for p in prompts)
        initial_rows = rows
        buckets = [rows]
        steps, interrupted = 0, False
        polls: deque[tuple[int, torch.Tensor, torch.cuda.Event | None]] = deque()
        flags = [self._pinned_flags(initial_rows) for _ in range(2)]
        total = max_cap
        if progress is not None and progress(Progress(stage="generate", done=1, total=total)):
            interrupted = True
        while not interrupted and steps < max_cap - 1:
            if self.use_graphs:
                self._graph(rows, config).replay()
            else:
                self._step(rows, config, longest_prompt + steps + 1)
            steps += 1
            if progress is not None and progress(Progress(stage="generate", done=steps + 1, total=total)):
                interrupted = True
                break
            if self.device.type != "cuda" or steps % POLL_STEPS == 0:
                buffer = flags[(steps // POLL_STEPS) % 2] if self.device.type == "cuda" else None
                polls.append(self._poll(rows, buffer))
                if self.device.type == "cuda" and len(polls) < 2:
                    continue
                running = self._read_poll(polls.popleft())
                if running == 0:
                    break
                if rows > 1 and running <= rows // 2:
                    rows = self._compact(rows, config)
                    buckets.append(rows)
                    polls.clear()
                    if rows == 0:
                        break
        self._sync()
        decode_s = time.perf_counter() - start
        tokens, reasons = self._collect(count, initial_rows, caps, interrupted)
        return CallResult(tokens=tokens, stop_reasons=reasons, prefill_s=prefill_s, decode_s=decode_s,
                          warmup_s=self.warmup_s - warm_before, steps=steps, buckets=buckets)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _pinned_flags(self, rows: int) -> torch.Tensor | None:
        if self.device.type != "cuda":
            return None
        return torch.empty(rows, dtype=torch.bool, pin_memory=True)

    def _poll(self, rows: int, buffer: torch.Tensor | None) -> tuple[int, torch.Tensor, torch.cuda.Event | None]:
        active = self.state.active[:rows]
        if buffer is None:
            return rows, active.clone(), None
        buffer[:rows].copy_(active, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return rows, buffer, event

    @staticmethod
    def _read_poll(poll: tuple[int, torch.Tensor, torch.cuda.Event | None]) -> int:
        rows, flags, event = poll
        if event is not None:
            event.synchronize()
        return int(flags[:rows].sum())

    def _compact(self, rows: int, config: SamplingConfig) -> int:
        """Move the running rows to the front (state and cache) and return the smaller bucket (0 if none run)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        active = self.state.active[:rows].cpu()
        running = torch.nonzero(active).flatten().tolist()
        if not running:
            return 0
        new_rows = batch_bucket(len(running))
        if new_rows >= rows:
            return rows
        idle = [r for r in range(rows) if r not in set(running)]
        order = torch.tensor(running + idle, device=self.device)
        used = int(self.state.pos[:rows].max()) + 1
        front = order[:new_rows]
        for keys, values in self.kv:
            keys[:new_rows, :, :used] = keys[:, :, :used].index_select(0, front)
            values[:new_rows, :, :used] = values[:, :, :used].index_select(0, front)
        self.state.permute_(order)
        if self.use_graphs:
            self._prepare_graph(new_rows, config)
        return new_rows

    def _collect(self, count: int, rows: int, caps: list[int], interrupted: bool
                 ) -> tuple[list[list[int]], list[StopReason]]:
        state = self.state
        out = state.out[:count].cpu()
        n_gen = torch.zeros(count, dtype=torch.long)
        slot_rows = state.rows[:rows].cpu()
        generated = state.n_gen[:rows].cpu()
        for slot, row in enumerate(slot_rows.tolist()):
            if row < count:
                n_gen[row] = generated[slot]
        tokens, reasons = [], []
        for row in range(count):
            n = int(n_gen[row])
            ids = out[row, :n].tolist()
            if ids and ids[-1] == EOT_ID:
                tokens.append(ids[:-1])
                reasons.append(StopReason.EOS)
            elif n >= caps[row]:
                tokens.append(ids)
                reasons.append(StopReason.CAP)
            else:
                tokens.append(ids)
                reasons.append(StopReason.INTERRUPTED)
        return tokens, reasons


def _describe(config: SamplingConfig) -> str:
    if config.greedy:
        kind = "greedy"
    else:
        kind = f"T={config.temperature:g} top_k={config.top_k} top_p={config.top_p:g}"
    return (f"{kind}, guard {'on' if config.repetition_guard else 'off'}, "
            f"audio constraint {'on' if config.constrain_audio else 'off'}")
