"""A real ComfyUI server for the integration tests (HTTP API and browser), shared by their modules.

``start_server`` runs ComfyUI on the CPU in a temporary base directory (``--base-directory``): its own
custom_nodes/ (a link to this checkout), models/TTS/ (a tiny random model folder) and input/ (the example
clip and transcript), so the ComfyUI tree itself is never written to. ``require_comfyui`` skips, naming
COMFYUI_DIR / COMFYUI_PYTHON, when no ComfyUI tree is configured. COMFYUI_FRONTEND_ROOT (optional) serves
another frontend build (the ``static`` folder of a ``comfyui-frontend-package`` wheel) instead of the bundled one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON")
FRONTEND_ROOT = os.environ.get("COMFYUI_FRONTEND_ROOT")  # another frontend build's static/ folder (optional)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO_ROOT / "example_workflows"
PACK_DIRNAME = "ComfyUI-Step-Audio-EditX"
SAMPLE_WAV, SAMPLE_TXT = "sample_speech.wav", "sample_speech.txt"
TINY_MODEL_DIRNAME = "Step-Audio-EditX"

STARTUP_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 600.0
POLL_S = 0.05


def require_comfyui(what: str = "the real ComfyUI server tests") -> None:
    """Skip the calling test module unless a ComfyUI tree and its Python are configured."""
    if not (COMFYUI_DIR and COMFYUI_PYTHON):
        pytest.skip(f"set COMFYUI_DIR (a ComfyUI tree) and COMFYUI_PYTHON (a Python that runs it) to run {what}",
                    allow_module_level=True)


class ComfyServer:
    """A ComfyUI process on a free port, with JSON helpers for its HTTP API."""

    def __init__(self, base: Path):
        self.base = base
        self.log_path = base / "comfyui.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        args = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--base-directory", str(base),
                "--output-directory", str(base / "output"), "--temp-directory", str(base / "temp"),
                "--user-directory", str(base / "user")]
        if FRONTEND_ROOT:
            args += ["--front-end-root", FRONTEND_ROOT]
        if "--database-url" in (Path(COMFYUI_DIR) / "comfy" / "cli_args.py").read_text(encoding="utf-8"):
            args += ["--database-url", "sqlite:///:memory:"]
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(args, cwd=COMFYUI_DIR, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.client_id = uuid.uuid4().hex
        self.not_runnable: str | None = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        pytest.fail(f"ComfyUI did not answer /system_stats in {STARTUP_TIMEOUT_S:.0f} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def get(self, path: str) -> object:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def queue(self, prompt: dict) -> tuple[int, dict]:
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})

    def history(self, prompt_id: str) -> dict | None:
        return self.get(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(POLL_S)
        pytest.fail(f"prompt {prompt_id} did not finish in {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    def run(self, prompt: dict) -> dict:
        status, body = self.queue(prompt)
        assert status == 200 and body["node_errors"] == {}, body
        return self.wait(body["prompt_id"])

    def status(self) -> dict:
        return self.get("/step_audio_editx/status")


def write_models(tts: Path) -> str | None:
    """Put a tiny model folder under ``tts``; None when the engine can run it, else why not."""
    from comfyui_step_audio_editx.engines.step_audio_editx.engine import EngineConfig, StepAudioEditX
    from comfyui_step_audio_editx.engines.step_audio_editx.tiny_models import write_tiny_model

    folders = write_tiny_model(tts, seed=0)
    engine = StepAudioEditX(EngineConfig(editx_dir=str(folders.editx), tokenizer_dir=str(folders.tokenizer),
                                         device="cpu"))
    try:
        engine.load()
    except NotImplementedError:
        return "engine not implemented yet"
    engine.unload()
    return None


def start_server(base: Path) -> ComfyServer:
    """A ready server in ``base`` with the pack, a tiny model and the example clip + transcript as inputs."""
    for sub in ("custom_nodes", "models/TTS", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True)
    (base / "custom_nodes" / PACK_DIRNAME).symlink_to(REPO_ROOT, target_is_directory=True)
    for name in (SAMPLE_WAV, SAMPLE_TXT):
        shutil.copy(EXAMPLES_DIR / name, base / "input" / name)
    not_runnable = write_models(base / "models" / "TTS")
    srv = ComfyServer(base)
    srv.not_runnable = not_runnable
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    return srv


def api_example(name: str, prefix: str) -> dict:
    """An API-format example pointed at the test's model folder and input clip, saving under ``prefix``."""
    prompt = json.loads((EXAMPLES_DIR / "api" / name).read_text(encoding="utf-8"))
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "StepAudioEditXEngine":
            inputs["model"] = TINY_MODEL_DIRNAME
        elif node["class_type"] in ("StepAudioEditXLoadAudioWithTranscript", "LoadAudio"):
            inputs["audio"] = SAMPLE_WAV
        elif node["class_type"] == "SaveAudio":
            inputs["filename_prefix"] = f"audio/{prefix}"
    return prompt


def node_id_of(prompt: dict, class_type: str) -> str:
    return next(i for i, n in prompt.items() if n["class_type"] == class_type)


def error_message(entry: dict) -> dict:
    return next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
