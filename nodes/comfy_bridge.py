"""The only module that touches ComfyUI (``comfy.*``, ``folder_paths``, ``server``), always lazily.

Outside ComfyUI (CI, scripts) every function here degrades to a plain-Python equivalent: no model
folders registered, no progress bar, no interruption, no model management. Inside ComfyUI:

* ``models/TTS`` is registered as the ``TTS`` model folder (after any ``extra_model_paths.yaml`` entries).
* ``prepare_engine`` loads the shared engine once and hands it to ComfyUI's model management through a
  ``ModelPatcher`` whose model moves the whole engine with ``engine.to()``: "Unload models" /
  ``POST /free {"unload_models": true}`` moves it off the GPU (and drops the weights when ComfyUI runs on
  the CPU, where there is nowhere to offload to), and ComfyUI offloads it when another model needs VRAM.
* ``NodeProgress`` is the engine's progress callback: ComfyUI's interrupt check on every generated
  token (Cancel stops within one token), a node progress bar, and a status line with rate and ETA.
* ``GET /step_audio_editx/status`` reports each cached engine's loaded state and the latest progress.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, TypeVar

import torch

from ..engines.step_audio_editx import (
    Progress,
    StepAudioEditX,
    choose_dtype,
    find_model_folders,
    resolve_device,
)
from .engine_cache import ENGINE_CACHE, EngineHandle
from .progress import TokenProgress

logger = logging.getLogger(__name__)
T = TypeVar("T")

TTS_FOLDER = "TTS"
STATUS_ROUTE = "/step_audio_editx/status"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".onnx", ".npy")
FP32_BYTES_PER_BF16_BYTE = 2  # the LM ships in bf16; an fp32 load doubles it
LOAD_HEADROOM = 1.1  # ask ComfyUI to free 10 % more than the weights' size before loading
INTERRUPT_EXCEPTION = "InterruptProcessingException"  # comfy.model_management's Cancel exception
QUANTIZED_LM_BYTES = {"int8": 0.57, "int4": 0.35}  # quantized / bf16 bytes of the full Step1 (bench_quant)


@functools.cache  # asked on every generated token: look each name up once
def _module(name: str) -> Optional[ModuleType]:
    """``name`` imported, or None outside ComfyUI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _model_management() -> Optional[ModuleType]:
    return _module("comfy.model_management")


# -- model folders and input files -----------------------------------------------------------------
def tts_model_roots() -> list[str]:
    """ComfyUI's TTS model folders (``models/TTS`` last, after any extra_model_paths.yaml entries)."""
    folder_paths = _module("folder_paths")
    if folder_paths is None:
        return []
    folder_paths.add_model_folder_path(TTS_FOLDER, os.path.join(folder_paths.models_dir, TTS_FOLDER))
    return folder_paths.get_folder_paths(TTS_FOLDER)


def input_audio_files() -> list[str]:
    """Audio and video files in ComfyUI's input folder (what core LoadAudio lists)."""
    folder_paths = _module("folder_paths")
    if folder_paths is None:
        return []
    input_dir = folder_paths.get_input_directory()
    names = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(names, ["audio", "video"]))


def input_file_path(name: str) -> Path:
    """The path of an input-folder file name as ComfyUI's widgets write it ("clip.wav [input]" too)."""
    folder_paths = _module("folder_paths")
    return Path(folder_paths.get_annotated_filepath(name) if folder_paths is not None else name)


def load_audio_file(path: Path) -> tuple[torch.Tensor, int]:
    """Decode ``path`` to float32 [C, T] and its sample rate (ComfyUI's own decoder when available)."""
    nodes_audio = _module("comfy_extras.nodes_audio")
    if nodes_audio is not None:
        return nodes_audio.load(str(path))
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), int(rate)


# -- devices -----------------------------------------------------------------------------------------
def torch_device(choice: str) -> torch.device:
    """``auto`` -> ComfyUI's device (honours --cpu, --cuda-device); else the named device, with its index."""
    mm = _model_management()
    device = mm.get_torch_device() if choice == "auto" and mm is not None else resolve_device(choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("Device 'mps' was asked for but this PyTorch has no Apple GPU (MPS) backend; use 'auto'.")
    return device


def _offload_device(load_device: torch.device) -> torch.device:
    mm = _model_management()
    if load_device.type == "cpu" or mm is None:
        return torch.device("cpu")
    return mm.unet_offload_device()


# -- interruption and progress -----------------------------------------------------------------------
def check_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user pressed Cancel (never catch it)."""
    mm = _model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


_LAST_PROGRESS: dict = {}
_LAST_PROGRESS_LOCK = threading.Lock()


class NodeProgress:
    """The engine's ProgressCallback for one node execution (``node_id`` from the hidden UNIQUE_ID)."""

    def __init__(self, node_id: Optional[str]):
        self.node_id = node_id
        self.tracker = TokenProgress()
        utils = _module("comfy.utils")
        self.bar = utils.ProgressBar(1, node_id=node_id) if utils is not None else None

    def __call__(self, p: Progress) -> None:
        check_interrupted()
        update = self.tracker.update(p)
        with _LAST_PROGRESS_LOCK:
            _LAST_PROGRESS.update(node=self.node_id, stage=p.stage, done=p.done, total=p.total, call=p.call,
                                  calls=p.calls, time=time.time())
        if update is None:
            return
        if self.bar is not None and update.total > 0:
            self.bar.update_absolute(update.value, update.total)
        _send_progress_text(update.text, self.node_id)

    def finish(self, outcome: str = "done") -> None:
        """Replace the running status line on the node with how the run ended."""
        _send_progress_text(self.tracker.finished_text(outcome), self.node_id)


def _send_progress_text(text: str, node_id: Optional[str]) -> None:
    server = sys.modules.get("server")  # ComfyUI's server module, only present inside a running ComfyUI
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is not None and node_id is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, node_id)


# -- model management --------------------------------------------------------------------------------
class _EngineModel(torch.nn.Module):
    """The engine as ComfyUI's ModelPatcher sees it: no submodules of its own (so ComfyUI never moves
    single layers), a size from ``engine.modules()``, and ``.to(device)`` that moves the whole engine."""

    def __init__(self, engine: StepAudioEditX, size: int, load_device: torch.device):
        super().__init__()
        object.__setattr__(self, "engine", engine)  # a plain attribute, not a registered submodule
        self.device = engine.device
        # Loaded straight onto its device: tell ComfyUI, so that it neither frees room for it nor moves it again.
        self.model_loaded_weight_memory = size if engine.device == load_device else 0

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and self.engine.loaded:
            self.engine.to(device)
        return self

    def get_dtype(self) -> Optional[torch.dtype]:
        params = itertools.chain.from_iterable(m.parameters() for m in self.engine.modules().values())
        return next((p.dtype for p in params), None)


def engine_bytes(engine: StepAudioEditX) -> int:
    """Bytes of the weights and buffers of ``engine.modules()`` (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for module in engine.modules().values():
        for t in itertools.chain(module.parameters(), module.buffers()):
            seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def _estimated_load_bytes(handle: EngineHandle, device: torch.device) -> int:
    """Size of the weight files the engine will load (0 when they are not downloaded yet); the language model's
    share scaled for quantizing on load (measured on the full model: int8 57 %, int4 35 % of the bf16 bytes)."""
    c = handle.config
    try:
        folders = find_model_folders(c.search_roots, c.editx_dir, c.tokenizer_dir)
    except FileNotFoundError:
        return 0

    def size(files) -> int:
        return sum(f.stat().st_size for f in files if f.suffix in WEIGHT_SUFFIXES and f.is_file())

    local_lm = folders.editx.is_dir() and c.remote_lm is None  # a remote LM loads nothing here
    lm = size(folders.editx.glob("*")) if local_lm else 0  # the LM's own files (not subfolders)
    rest = sum(size(root.rglob("*")) for root in (folders.tokenizer, folders.cosyvoice) if root.is_dir())
    if not folders.quantized:
        lm = int(lm * QUANTIZED_LM_BYTES.get(c.quantize, 1.0))
    if choose_dtype(device, c.dtype) == torch.float32:
        lm *= FP32_BYTES_PER_BF16_BYTE
    return int((lm + rest) * LOAD_HEADROOM)


_PATCHERS: dict[int, object] = {}  # id(engine) -> its ModelPatcher (while the engine is cached)


def _drop_patcher(engine: StepAudioEditX) -> None:
    """Take the engine's ModelPatcher out of ComfyUI's loaded-model list and forget it."""
    patcher = _PATCHERS.pop(id(engine), None)
    mm = _model_management()
    if patcher is None or mm is None:
        return
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[i].model is patcher:
            mm.current_loaded_models.pop(i).model_unload()


def _new_patcher(engine: StepAudioEditX) -> object:
    model_patcher = importlib.import_module("comfy.model_patcher")
    callbacks = importlib.import_module("comfy.patcher_extension").CallbacksMP
    load_device = torch.device(engine.config.device)
    offload_device = _offload_device(load_device)
    size = engine_bytes(engine)
    patcher = model_patcher.ModelPatcher(_EngineModel(engine, size, load_device), load_device, offload_device,
                                         size=size)

    def on_detach(_patcher, unpatch_all: bool) -> None:
        if not (unpatch_all and engine.loaded):  # unpatch_all False: ComfyUI re-registers it, nothing moves
            return
        if load_device == offload_device:
            logger.info("Step-Audio-EditX: ComfyUI unloaded the models; dropping the weights (nowhere to offload)")
            engine.unload()
        else:
            logger.info("Step-Audio-EditX: offloaded to %s", offload_device)

    patcher.add_callback(callbacks.ON_DETACH, on_detach)
    return patcher


def prepare_engine(handle: EngineHandle) -> StepAudioEditX:
    """The shared, loaded engine for ``handle``, placed on its device by ComfyUI's model management."""
    engine = ENGINE_CACHE.get(handle.config, on_evict=_drop_patcher)
    mm = _model_management()
    if not engine.loaded:
        _drop_patcher(engine)  # one of an earlier load, whose weights are gone
        device = torch.device(handle.config.device)
        if mm is not None and device.type != "cpu":
            mm.free_memory(_estimated_load_bytes(handle, device), device)
        logger.info("Step-Audio-EditX: loading %s", handle.config)
        engine.load()
    if mm is not None:
        if id(engine) not in _PATCHERS:
            _PATCHERS[id(engine)] = _new_patcher(engine)
        mm.load_models_gpu([_PATCHERS[id(engine)]], force_full_load=True)
    load_device = torch.device(handle.config.device)
    if engine.device != load_device:  # e.g. --novram: ComfyUI leaves weights where they are; the engine runs whole
        engine.to(load_device)
    return engine


def run_on_engine(handle: EngineHandle, node_id: Optional[str],
                  work: Callable[[StepAudioEditX, NodeProgress], T]) -> tuple[T, float, float]:
    """``work(engine, progress)`` on the prepared engine; returns its result, load seconds, run seconds."""
    start = time.perf_counter()
    engine = prepare_engine(handle)
    ready = time.perf_counter()
    progress = NodeProgress(node_id)
    try:
        with torch.inference_mode():
            result = work(engine, progress)
    except BaseException as exc:  # re-raised untouched: only the node's status line changes
        interrupted = type(exc).__name__ == INTERRUPT_EXCEPTION
        progress.finish("cancelled" if interrupted else "failed")
        raise
    progress.finish()
    return result, ready - start, time.perf_counter() - ready


# -- status route and pack start-up ------------------------------------------------------------------
def status() -> dict:
    """Loaded state of every cached engine and the latest progress report (JSON-ready)."""
    engines = []
    for config, engine in ENGINE_CACHE.engines():
        loaded = engine.loaded
        engines.append({
            "editx_dir": config.editx_dir, "download": config.download, "device": config.device,
            "dtype": config.dtype, "attention": config.attention, "fast_decode": config.fast_decode,
            "quantize": config.quantize, "lm_server": config.remote_lm.url if config.remote_lm else "",
            "loaded": loaded, "on_device": str(engine.device) if loaded else None,
            "managed": id(engine) in _PATCHERS,
        })
    with _LAST_PROGRESS_LOCK:
        progress = dict(_LAST_PROGRESS) or None
    return {"engines": engines, "progress": progress}


def register_routes() -> None:
    """Add ``GET /step_audio_editx/status`` to a running ComfyUI server (no-op elsewhere)."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return
    from aiohttp import web  # ComfyUI's web framework

    @instance.routes.get(STATUS_ROUTE)
    async def _status(_request):
        return web.json_response(status())


def on_pack_import() -> None:
    """Called once when ComfyUI imports the pack."""
    tts_model_roots()
    register_routes()
