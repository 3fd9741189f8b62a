"""A stand-in vLLM server for tests and the CPU benchmark: a tiny random Llama with Step1's vocabulary.

vLLM's CPU attention has no sqrt-ALiBi, so Step1 itself cannot be served there. This writes a random
``LlamaForCausalLM`` (an architecture vLLM runs on CPU) with Step1's vocabulary size and special ids, and
starts ``vllm.entrypoints.openai.api_server`` on it with the pack's plugin, from a separate Python
environment (``STEP_AUDIO_VLLM_PYTHON``). It proves the client, the plugin, seeds, cancel and the errors
end to end; Step1's own kernels (``TRITON_ATTN`` sqrt-ALiBi) are NOT exercised by it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ...constants import BOS_ID, EOT_ID, MAX_CONTEXT_TOKENS, PAD_ID, TEXT_VOCAB_SIZE
from . import step_audio_vllm_plugin as plugin

logger = logging.getLogger(__name__)

VLLM_PYTHON_ENV = "STEP_AUDIO_VLLM_PYTHON"  # the python of an environment with vLLM installed
STAND_IN_NAME = "step1-stand-in"
STAND_IN_HIDDEN = 128  # vLLM's CPU attention takes head sizes like 64, not 16
STAND_IN_HEADS = 2
STAND_IN_LAYERS = 2
STAND_IN_FFN = 256
STAND_IN_WEIGHT_STD = 0.5  # large enough that the random logits are not flat
STAND_IN_OUT_STD = 1e-4  # attention / MLP outputs stay small next to the token's own embedding ...
STAND_IN_KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE
SERVER_START_TIMEOUT_S = 600.0
SERVER_POLL_S = 1.0
STOP_WAIT_S = 30.0
PLUGIN_DIR = Path(__file__).resolve().parent


def vllm_python() -> Optional[str]:
    """The vLLM environment's python from ``STEP_AUDIO_VLLM_PYTHON``, or None when unset or missing."""
    path = os.environ.get(VLLM_PYTHON_ENV, "").strip()
    return path if path and Path(path).is_file() else None


def write_stand_in_model(folder: Path, seed: int = 0, tie_word_embeddings: bool = False) -> Path:
    """A random Llama with Step1's vocabulary and special ids, as config.json + model.safetensors."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, f, v = STAND_IN_HIDDEN, STAND_IN_FFN, TEXT_VOCAB_SIZE
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v, "hidden_size": h,
              "num_hidden_layers": STAND_IN_LAYERS, "num_attention_heads": STAND_IN_HEADS,
              "num_key_value_heads": STAND_IN_HEADS, "intermediate_size": f,
              "max_position_embeddings": MAX_CONTEXT_TOKENS, "rms_norm_eps": 1e-5,
              "tie_word_embeddings": tie_word_embeddings, "bos_token_id": BOS_ID, "eos_token_id": EOT_ID,
              "pad_token_id": PAD_ID, "torch_dtype": "float32", "hidden_act": "silu", "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = STAND_IN_WEIGHT_STD) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std).contiguous()

    embed = rand(v, h)
    tensors = {"model.embed_tokens.weight": embed, "model.norm.weight": torch.ones(h)}
    if not tie_word_embeddings:  # ... and the head is a copy of the embedding: greedy decoding repeats the last
        tensors["lm_head.weight"] = embed.clone()  # id, the case the repetition guard exists for
    for i in range(STAND_IN_LAYERS):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj"):
            tensors[f"{p}self_attn.{name}.weight"] = rand(h, h)
        tensors[f"{p}self_attn.o_proj.weight"] = rand(h, h, std=STAND_IN_OUT_STD)
        tensors[f"{p}mlp.gate_proj.weight"] = rand(f, h)
        tensors[f"{p}mlp.up_proj.weight"] = rand(f, h)
        tensors[f"{p}mlp.down_proj.weight"] = rand(h, f, std=STAND_IN_OUT_STD)
        tensors[f"{p}input_layernorm.weight"] = torch.ones(h)
        tensors[f"{p}post_attention_layernorm.weight"] = torch.ones(h)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(python: str, model_dir: Path, port: int, with_plugin: bool = True,
                  max_model_len: int = MAX_CONTEXT_TOKENS) -> list[str]:
    """The server command (the CPU build's equivalent of ``vllm serve``; see docs/remote_lm.md for Step1's)."""
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", STAND_IN_NAME, "--skip-tokenizer-init", "--dtype", "float32",
           "--max-model-len", str(max_model_len), "--enforce-eager",
           # vLLM 0.32's CPU runner crashes on a seeded request whose prefill is chunked ("CPU Generator does not
           # use offset"): whole prefills only, as many prompt tokens per step as the context holds
           "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max_model_len)]
    if with_plugin:
        cmd += ["--logits-processors", plugin.PLUGIN_FQCN]
    return cmd


@dataclass
class StandInServer:
    """A running stand-in server; ``stop()`` ends it (and its engine process)."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> None:
        """End the server's process group (the API server and the engine process it started)."""
        for sig, wait_s in ((signal.SIGTERM, STOP_WAIT_S), (signal.SIGKILL, STOP_WAIT_S)):
            try:
                os.killpg(self.process.pid, sig)  # its own session: started with start_new_session
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def start_stand_in_server(python: str, workdir: Path, with_plugin: bool = True,
                          timeout_s: float = SERVER_START_TIMEOUT_S) -> StandInServer:
    """Write the stand-in model under ``workdir`` and start a server on it; returns once it answers."""
    model_dir = write_stand_in_model(Path(workdir) / "model")
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), env.get("PYTHONPATH", "")]))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(STAND_IN_KV_CACHE_GIB))
    log_path = Path(workdir) / "vllm_server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(serve_command(python, model_dir, port, with_plugin), stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=str(workdir), start_new_session=True)
    server = StandInServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/v1/models", timeout=SERVER_POLL_S) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(SERVER_POLL_S)
    server.stop()
    raise RuntimeError(f"the vLLM server did not answer within {timeout_s:g} s:\n{server.log_tail()}")
