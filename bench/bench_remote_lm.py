"""Throughput of the remote LM: many concurrent clients on one vLLM server vs one local engine.

On this machine's CPU the server is vLLM's CPU build serving the stand-in (a tiny random Llama with
Step1's vocabulary, ``lm/remote/stand_in.py``; vLLM's CPU attention has no sqrt-ALiBi, so Step1 itself
cannot be served there); the local side is the pack's own ``generate`` on a random Step1 of the same
width and depth. Every request: the same prompt length, the audio constraint on, run to its cap.

* server: ``C`` client threads, each its own ``RemoteLM`` (like ``C`` ComfyUI workers), one request
  each, all at once; the server batches them continuously;
* local, one at a time: one engine takes the ``C`` requests in turn (what ``C`` workers sharing one
  local engine get: the engine runs one call at a time);
* local, batched: ``generate`` calls of at most 16 rows over all ``C`` (what one worker's ``batch_edit``
  gets: the engine's batches hold at most ``MAX_GENERATE_BATCH`` rows).

Each case runs ``--repeats`` times and the fastest run is kept (the machine may be shared).

The CPU numbers show the mechanism (concurrency turns into server-side batches), not GPU speed: the
expected GPU figures, from our measured H200 decode rates, are on paper in docs/performance.md.

    STEP_AUDIO_VLLM_PYTHON=/path/to/vllm-venv/bin/python python bench/bench_remote_lm.py --json r.json --markdown r.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import device_description, random_step1, run_and_report  # noqa: E402

from comfyui_step_audio_editx.engines.step_audio_editx.constants import BOS_ID, TEXT_VOCAB_SIZE  # noqa: E402
from comfyui_step_audio_editx.engines.step_audio_editx.engine import MAX_GENERATE_BATCH  # noqa: E402
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate  # noqa: E402
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.client import RemoteLM  # noqa: E402
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.config import RemoteLMConfig  # noqa: E402
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.stand_in import (  # noqa: E402
    STAND_IN_FFN,
    STAND_IN_HEADS,
    STAND_IN_HIDDEN,
    STAND_IN_LAYERS,
    VLLM_PYTHON_ENV,
    start_stand_in_server,
    vllm_python,
)
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig  # noqa: E402

LOCAL_DIMS = {"hidden_size": STAND_IN_HIDDEN, "intermediate_size": STAND_IN_FFN, "num_attention_heads": STAND_IN_HEADS,
              "num_attention_groups": STAND_IN_HEADS, "num_hidden_layers": STAND_IN_LAYERS,
              "vocab_size": TEXT_VOCAB_SIZE}
FULL_RUN = {"prompt_tokens": 500, "new_tokens": 250, "clients": (1, 4, 8, 16, 32)}
TINY_RUN = {"prompt_tokens": 40, "new_tokens": 20, "clients": (1, 4)}
PROMPT_TEXT_ID = 300  # filler text id of the prompts


def prompt(length: int, row: int) -> list[int]:
    """Distinct prompts (no shared prefix for the server's cache to reuse)."""
    return [BOS_ID] + [PROMPT_TEXT_ID + (row * 7 + n) % 1000 for n in range(length - 1)]


def server_case(url: str, clients: int, prompt_tokens: int, new_tokens: int, sampling: SamplingConfig) -> dict:
    """``clients`` threads, each its own RemoteLM with one request, started together."""
    lms = [RemoteLM(RemoteLMConfig(url, require_step1=False)) for _ in range(clients)]
    for lm in lms:
        lm.connect()
    latencies = [0.0] * clients
    tokens = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        out = lms[i].generate([prompt(prompt_tokens, i)], [new_tokens], sampling, [i])[0]
        latencies[i] = time.perf_counter() - start
        tokens[i] = len(out.tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"case": "server", "clients": clients, "wall_s": wall, "tokens": sum(tokens),
            "tok_s": sum(tokens) / wall, "latency_mean_s": statistics.mean(latencies)}


def local_cases(model, clients: int, prompt_tokens: int, new_tokens: int, sampling: SamplingConfig) -> list[dict]:
    prompts = [prompt(prompt_tokens, i) for i in range(clients)]
    start = time.perf_counter()
    latencies, total = [], 0
    for i, p in enumerate(prompts):  # one engine, one call at a time: request i waits for the ones before it
        out = generate(model, [p], [new_tokens], sampling, [i])[0]
        total += len(out.tokens)
        latencies.append(time.perf_counter() - start)
    wall = time.perf_counter() - start
    one_by_one = {"case": "local one at a time", "clients": clients, "wall_s": wall, "tokens": total,
                  "tok_s": total / wall, "latency_mean_s": statistics.mean(latencies)}
    start = time.perf_counter()
    total = 0
    for first in range(0, clients, MAX_GENERATE_BATCH):
        rows = list(range(first, min(first + MAX_GENERATE_BATCH, clients)))
        outs = generate(model, [prompts[i] for i in rows], [new_tokens] * len(rows), sampling, rows)
        total += sum(len(o.tokens) for o in outs)
    wall = time.perf_counter() - start
    batched = {"case": "local batched", "clients": clients, "wall_s": wall, "tokens": total, "tok_s": total / wall,
               "latency_mean_s": wall}
    return [one_by_one, batched]


def fastest(runs: list[dict]) -> dict:
    """The run with the shortest wall time, with how many were made."""
    return {**min(runs, key=lambda r: r["wall_s"]), "runs": len(runs)}


def run(args) -> dict:
    python = args.vllm_python or vllm_python()
    if not python:
        raise SystemExit(f"set {VLLM_PYTHON_ENV} (or --vllm-python) to the python of an environment with vLLM")
    plan = TINY_RUN if args.tiny else FULL_RUN
    clients = [int(c) for c in args.clients.split(",")] if args.clients else list(plan["clients"])
    prompt_tokens, new_tokens = plan["prompt_tokens"], plan["new_tokens"]
    sampling = SamplingConfig(temperature=1.0)  # the constraint on: every row runs to its cap in phase
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_remote_lm_") as tmp:
        server = start_stand_in_server(python, Path(tmp))
        try:
            server_case(server.url, 1, prompt_tokens, 5, sampling)  # warm-up
            for c in clients:
                rows.append(fastest([server_case(server.url, c, prompt_tokens, new_tokens, sampling)
                                     for _ in range(args.repeats)]))
        finally:
            server.stop()
    model = random_step1(LOCAL_DIMS, torch.device("cpu"), torch.float32, "sdpa", seed=0, never_stop=True)
    generate(model, [prompt(prompt_tokens, 0)], [5], sampling, [0])  # warm-up
    for c in clients:
        runs = [local_cases(model, c, prompt_tokens, new_tokens, sampling) for _ in range(args.repeats)]
        rows.extend(fastest(list(case)) for case in zip(*runs))
    return {"device": device_description(torch.device("cpu")), "vllm_python": python,
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "rows": rows}


def markdown(report: dict) -> str:
    d = report["device"]
    lines = [f"Remote LM throughput on {d['name']} (CPU, torch threads {d['threads']}), torch {d['torch']}, "
             f"{d['date']}; prompts of {report['prompt_tokens']} tokens, {report['new_tokens']} new tokens each; "
             "fastest of the runs per case.",
             "", "| clients | case | wall s | tokens | tokens/s | mean latency s |", "|---:|---|---:|---:|---:|---:|"]
    for r in sorted(report["rows"], key=lambda r: (r["clients"], r["case"])):
        lines.append(f"| {r['clients']} | {r['case']} | {r['wall_s']:.2f} | {r['tokens']} | {r['tok_s']:.0f} | "
                     f"{r['latency_mean_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vllm-python", help=f"python of the vLLM environment (default: ${VLLM_PYTHON_ENV})")
    p.add_argument("--clients", help="comma-separated client counts (default 1,4,8,16,32; --tiny 1,4)")
    p.add_argument("--tiny", action="store_true", help="a smoke run: short prompts, few tokens")
    p.add_argument("--repeats", type=int, default=2, help="runs per case; the fastest is kept (default 2)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    return run_and_report(run, markdown, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
