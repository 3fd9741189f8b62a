"""What every benchmark script shares: synthetic speech, timing with device sync, device description."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

BYTES_PER_GIB = 1024**3


def synthetic_speech(seconds: float, sr: int, channels: int = 1, seed: int = 0, peak: float = 0.8) -> torch.Tensor:
    """Speech-like harmonics (vibrato, syllable envelope, pauses, a little noise): ``[channels, samples]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(130 + 30 * np.sin(2 * np.pi * 0.7 * t)) / sr
    wav = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 25))
    wav = wav * np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) + 0.01 * rng.standard_normal(t.shape)
    wav = peak * wav / np.abs(wav).max()
    return torch.from_numpy(np.stack([wav * (1 - 0.1 * c) for c in range(channels)]).astype(np.float32))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[dict, object]:
    """Median / min wall time in ms of ``fn`` (device synchronised around each call) and its last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "repeats": repeats}, result


def write_report(report: dict, text: str, json_path: Path | None, markdown_path: Path | None) -> None:
    """The JSON and markdown files a benchmark was asked for (their folders made as needed)."""
    for path, content in ((json_path, json.dumps(report, indent=2)), (markdown_path, text)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")


def run_and_report(run: Callable[[object], dict], markdown: Callable[[dict], str], args) -> int:
    """A benchmark's main after parsing: log to the console, run, print the markdown, write the files asked for."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    report = run(args)
    text = markdown(report)
    print(text)  # noqa: T201 - the benchmark's product is its report
    write_report(report, text, args.json, args.markdown)
    return 0


def device_description(device: torch.device) -> dict:
    """Device, library versions and date: what a reported number must be read against."""
    import transformers

    info = {"device": str(device), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / BYTES_PER_GIB, 1), cuda=torch.version.cuda)
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def random_step1(dims: dict, device: torch.device, dtype: torch.dtype, attn: str, seed: int,
                 never_stop: bool = False, audio_head_scale: float = 1.0):
    """A random-weight Step1 made directly on ``device`` in ``dtype`` (no host copy).

    ``never_stop`` zeroes the <|EOT|> row of the head so rows run to their cap; ``audio_head_scale``
    spreads the audio logits far above it.
    """
    from comfyui_step_audio_editx.engines.step_audio_editx.constants import EOT_ID, VQ02_FIRST_ID, VQ06_LAST_ID
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
    from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import dtype_kwargs

    torch.manual_seed(seed)
    with torch.device(device):
        model = Step1ForCausalLM._from_config(Step1Config(**dims), attn_implementation=attn, **dtype_kwargs(dtype))
    model = model.eval().requires_grad_(False)
    if never_stop:
        with torch.no_grad():
            head = model.lm_head.weight
            if head.shape[0] > VQ06_LAST_ID:
                head[VQ02_FIRST_ID:VQ06_LAST_ID + 1] *= audio_head_scale
            head[EOT_ID] = 0.0
    return model
