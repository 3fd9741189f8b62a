"""Shared fixtures: where the parity fixture set lives, and how to read its references.

Parity sets are folders in the official on-disk format plus ``reference/`` outputs computed by the
official implementation. ``STEP_AUDIO_PARITY_DIR`` points at one (default ``../shared/parity/A`` from
the repository root); tests must pass for any set in that format.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

# The tiny models' ops are far too small to gain from intra-op threads, and on CI's two shared cores OpenMP's
# spinning threads made the suite several times slower (tests/test_engine.py + test_generation.py under load:
# 301 s with the default threads, 91 s with one). One thread per process (children inherit it) unless the
# caller chose a number; GPU work is unaffected.
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # imported before this file (a plugin): its thread pool is already sized
        sys.modules["torch"].set_num_threads(1)

# Timed decode-kernel choices are stored per machine (lm/matmul_choice_store); tests keep their own store so
# they neither read a developer's choices nor leave files in the user's cache.
if "STEP_AUDIO_EDITX_KERNEL_CHOICES" not in os.environ:
    os.environ["STEP_AUDIO_EDITX_KERNEL_CHOICES"] = os.path.join(tempfile.mkdtemp(prefix="step_audio_kernels_"),
                                                                 "decode_matmuls.json")

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _register_helper_module(name: str) -> None:
    """Make ``tests/<name>.py`` importable as ``<name>`` (pytest's importlib mode puts no test folder on sys.path)."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_register_helper_module("comfyui_harness")  # the real ComfyUI server of the HTTP-API and browser tests
_register_helper_module("node_doubles")  # fake engine and AUDIO inputs of the node tests
_register_helper_module("layer_cases")  # one decode layer's matmul roles, as the GPU kernel tests drive them
_register_helper_module("interpreted")  # kernel checks run by Triton's CPU interpreter in a child process
_register_helper_module("decoder_cases")  # token2wav clips of the parity fixture for padded batches
DEFAULT_PARITY_DIR = REPO_ROOT.parent / "shared" / "parity" / "A"


def parity_dir() -> Path:
    return Path(os.environ.get("STEP_AUDIO_PARITY_DIR", DEFAULT_PARITY_DIR)).resolve()


class ParitySet:
    """One fixture set: model folders and reference arrays (read at test time, never copied)."""

    def __init__(self, root: Path):
        self.root = root
        self.editx_dir = root / "Step-Audio-EditX"
        self.tokenizer_dir = root / "Step-Audio-Tokenizer"
        self.reference_dir = root / "reference"
        self._npz: dict[str, np.lib.npyio.NpzFile] = {}

    def npz(self, name: str):
        if name not in self._npz:
            self._npz[name] = np.load(self.reference_dir / f"{name}.npz", allow_pickle=False)
        return self._npz[name]

    def json(self, name: str) -> dict:
        with open(self.reference_dir / f"{name}.json", encoding="utf-8") as f:
            return json.load(f)


@pytest.fixture(scope="session")
def parity() -> ParitySet:
    root = parity_dir()
    if not (root / "reference" / "reference.json").is_file():
        pytest.skip(f"parity reference set (outputs of the official implementation; not in this repository) not found "
                    f"at {root}: set STEP_AUDIO_PARITY_DIR to a folder with reference/reference.json")
    return ParitySet(root)


@pytest.fixture
def load_bench(monkeypatch):
    """Import a script of ``bench/`` as ``python bench/<name>.py`` would run it (its folder on sys.path)."""
    import importlib.util
    import sys

    bench_dir = REPO_ROOT / "bench"
    monkeypatch.syspath_prepend(str(bench_dir))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, bench_dir / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # dataclasses resolve their module there
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> Path:
    """One tiny random model (official layout) for the whole session: Step-Audio-EditX/ + Step-Audio-Tokenizer/."""
    from comfyui_step_audio_editx.engines.step_audio_editx import write_tiny_model

    root = tmp_path_factory.mktemp("tiny_model")
    write_tiny_model(root, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_root):
    """The real engine on the tiny model, on the CPU (shared: tests clear its caches where they matter)."""
    from comfyui_step_audio_editx.engines.step_audio_editx import EngineConfig, StepAudioEditX

    return StepAudioEditX(EngineConfig(search_roots=(str(tiny_model_root),), device="cpu")).load()


@pytest.fixture(scope="session")
def short_sample_clip(tmp_path_factory):
    """Writes the shipped sample clip cut to 1.5 s, with ``text`` as its transcript beside it (the CLI reads
    <clip>.txt); returns the clip's path."""
    import soundfile as sf

    sample = REPO_ROOT / "example_workflows" / "sample_speech.wav"

    def write(name: str, text: str) -> Path:
        data, sr = sf.read(sample, dtype="float32")
        path = tmp_path_factory.mktemp("clips") / f"{name}.wav"
        sf.write(path, data[: int(1.5 * sr)], sr)
        path.with_suffix(".txt").write_text(text, encoding="utf-8")
        return path

    return write


# --- the node tests' ComfyUI stand-ins (tests/node_doubles.py) ----------------------------------------------
@pytest.fixture
def tts_root(tmp_path, monkeypatch):
    from comfyui_step_audio_editx.nodes import comfy_bridge
    from node_doubles import EXAMPLES_DIR, SAMPLE_WAV

    """A models/TTS folder holding a (config-only) Step-Audio-EditX folder, as ComfyUI would list it."""
    root = tmp_path / "TTS"
    (root / "Step-Audio-EditX").mkdir(parents=True)
    (root / "Step-Audio-EditX" / "config.json").write_text(json.dumps({"model_type": "step1"}))
    monkeypatch.setattr(comfy_bridge, "tts_model_roots", lambda: [str(root)])
    monkeypatch.setattr(comfy_bridge, "input_audio_files", lambda: [SAMPLE_WAV])
    monkeypatch.setattr(comfy_bridge, "input_file_path", lambda name: EXAMPLES_DIR / name)
    return root


@pytest.fixture
def fake_engines(tts_root, monkeypatch):
    from comfyui_step_audio_editx.nodes import comfy_bridge
    from comfyui_step_audio_editx.nodes.engine_cache import EngineCache
    from node_doubles import FakeEngine

    cache = EngineCache(factory=FakeEngine)
    monkeypatch.setattr(comfy_bridge, "ENGINE_CACHE", cache)
    return cache
