"""The remote-LM client against a small in-process fake of vLLM's HTTP API (no vLLM needed: CI runs these).

The fake speaks just enough of /v1/models and /v1/completions (token-id prompts, SSE streams with
``token_ids``, the plugin's handshake) to drive every path of the client: handshake checks, request
fields, retries on 503, timeouts, absent servers, cancel, concurrency. The proof against a real vLLM
server is tests/test_remote_lm_vllm.py.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote import step_audio_vllm_plugin as plugin
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.client import RemoteLM, completion_body
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.config import (
    RemoteLMConfig,
    RemoteLMOverloaded,
    RemoteLMRequestError,
    RemoteLMTimeout,
    RemoteLMUnavailable,
    RemoteLMWrongServer,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.stand_in import free_port
from comfyui_step_audio_editx.engines.step_audio_editx.types import Progress, SamplingConfig, StopReason

STEP1_FLAGS = plugin.FLAG_STEP1 | plugin.FLAG_STEP1_VOCAB


class FakeVLLM:
    """Scriptable fake server. ``tokens(body)`` gives the ids a completion streams."""

    def __init__(self, flags: int = STEP1_FLAGS, max_model_len: int = C.MAX_CONTEXT_TOKENS):
        self.flags, self.max_model_len = flags, max_model_len
        self.plugin = True
        self.token_ids = True
        self.fail_with: list[int] = []  # statuses answered to the next completions, one each
        self.delay_s = 0.0  # between streamed tokens
        self.stall_s = 0.0  # before the first token
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.disconnects = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/v1/models":
                    return self._json(404, {"detail": "Not Found"})
                self._json(200, {"data": [{"id": "step1", "max_model_len": fake.max_model_len}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append(body)
                    status = fake.fail_with.pop(0) if fake.fail_with else 200
                if status != 200:
                    return self._json(status, {"error": {"message": f"fake {status}"}})
                if (body.get("vllm_xargs") or {}).get(plugin.XARG_PROBE):
                    ids = plugin.probe_answer(fake.flags) if fake.plugin else [17, 9, 12]
                    choice = {"token_ids": ids} if fake.token_ids else {"text": "x"}
                    return self._json(200, {"choices": [choice]})
                self._stream(body)

            def _stream(self, body: dict) -> None:
                ids = fake.tokens(body)
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                left = False

                def leave() -> None:  # the request stops counting BEFORE its client can see the end and start another
                    nonlocal left
                    with fake.lock:
                        if not left:
                            left = True
                            fake.in_flight -= 1

                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    time.sleep(fake.stall_s)
                    for n, t in enumerate(ids):
                        last = n == len(ids) - 1
                        if last:
                            leave()
                        finish = ("stop" if t == C.EOT_ID else "length") if last else None
                        event = {"choices": [{"index": 0, "token_ids": [t], "finish_reason": finish}]}
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(fake.delay_s)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except OSError:
                    with fake.lock:
                        fake.disconnects += 1
                finally:
                    leave()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @staticmethod
    def tokens(body: dict) -> list[int]:
        """Audio ids in phase, seeded, ending with <|EOT|> after 2 groups when the cap allows."""
        seed, cap = body["seed"], body["max_tokens"]
        ids = [C.VQ02_FIRST_ID + (seed + n) % 7 if n % 5 < 2 else C.VQ06_FIRST_ID + n for n in range(10)]
        return (ids + [C.EOT_ID])[:cap]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    server = FakeVLLM()
    yield server
    server.close()


def client(url: str, **kw) -> RemoteLM:
    kw.setdefault("retry_backoff_s", 0.01)
    return RemoteLM(RemoteLMConfig(url, **kw))


def test_generate_sends_our_settings_and_reads_the_stream(fake):
    lm = client(fake.url)
    sampling = SamplingConfig(temperature=0.5, top_k=50, top_p=0.9, repetition_guard=True)
    outs = lm.generate([[1, 4, 5], [1, 4, 6, 7]], [30, 7], sampling, [3, 4])
    assert [o.stop_reason for o in outs] == [StopReason.EOS, StopReason.CAP]
    assert outs[0].tokens == FakeVLLM.tokens({"seed": 3, "max_tokens": 30})[:-1] and len(outs[1].tokens) == 7
    body = sorted((b for b in fake.bodies if b.get("stream")), key=lambda b: b["seed"])[0]
    assert body["prompt"] == [1, 4, 5] and body["max_tokens"] == 30 and body["seed"] == 3
    assert body["temperature"] == 0.5 and body["top_k"] == 50 and body["top_p"] == 0.9
    assert body["stop_token_ids"] == [C.EOT_ID] and body["return_token_ids"] is True
    assert body["vllm_xargs"] == {plugin.XARG_CONSTRAIN: 1, plugin.XARG_GUARD: 1}
    greedy = completion_body("m", [1], 5, SamplingConfig(temperature=0.0, constrain_audio=False), 1)
    assert greedy["temperature"] == 0.0 and "vllm_xargs" not in greedy


def test_rows_go_out_concurrently(fake):
    fake.delay_s = 0.02
    outs = client(fake.url).generate([[1, 2]] * 8, [10] * 8, SamplingConfig(), list(range(8)))
    assert all(len(o.tokens) == 10 for o in outs) and fake.max_in_flight >= 6
    fake.max_in_flight = 0
    client(fake.url, max_concurrency=2).generate([[1, 2]] * 6, [10] * 6, SamplingConfig(), list(range(6)))
    assert fake.max_in_flight == 2


def test_overload_is_retried_then_reported(fake):
    fake.fail_with = [503, 503]
    lm = client(fake.url, retries=2)
    assert len(lm.generate([[1, 2]], [5], SamplingConfig(), [1])[0].tokens) == 5  # probe + 1st row 503, then OK
    fake.fail_with = [503] * 3
    with pytest.raises(RemoteLMOverloaded, match="overloaded.*HTTP 503"):
        lm.generate([[1, 2]], [5], SamplingConfig(), [1])


def test_absent_server_is_named():
    started = time.monotonic()
    with pytest.raises(RemoteLMUnavailable, match=r"No language-model server answers at http://127\.0\.0\.1"):
        client(f"http://127.0.0.1:{free_port()}", retries=1).connect()
    assert time.monotonic() - started < 5


def test_a_stalled_stream_times_out(fake):
    lm = client(fake.url, read_timeout_s=0.3, retries=0)
    lm.connect()
    fake.stall_s = 1.0
    with pytest.raises(RemoteLMTimeout, match="streamed nothing for 0.3 s"):
        lm.generate([[1, 2]], [5], SamplingConfig(), [1])


@pytest.mark.parametrize("flags, plugin_loaded, message", [
    (plugin.FLAG_STEP1_VOCAB, True, "is not Step1ForCausalLM"),
    (STEP1_FLAGS | plugin.FLAG_TIED_HEAD, True, "tie_word_embeddings"),
    (plugin.FLAG_STEP1, True, "vocabulary is not Step1's 74752"),
    (STEP1_FLAGS, False, "--logits-processors step_audio_vllm_plugin:StepAudioSlotProcessor"),
])
def test_a_wrong_server_is_refused_with_the_fix(fake, flags, plugin_loaded, message):
    fake.flags, fake.plugin = flags, plugin_loaded
    with pytest.raises(RemoteLMWrongServer, match=message):
        client(fake.url).connect()
    assert not any(b.get("stream") for b in fake.bodies)


def test_an_old_server_without_token_ids_and_a_wrong_model_name(fake):
    fake.token_ids = False
    with pytest.raises(RemoteLMWrongServer, match="return_token_ids"):
        client(fake.url).connect()
    with pytest.raises(RemoteLMWrongServer, match="does not serve 'other'.*step1"):
        client(fake.url, model="other").connect()


def test_prompts_are_checked_and_caps_fit_the_server_context(fake):
    lm = client(fake.url)
    with pytest.raises(ValueError, match="outside the vocabulary"):  # such a prompt can kill a vLLM engine
        lm.generate([[1, C.TEXT_VOCAB_SIZE]], [5], SamplingConfig(), [1])
    fake.max_model_len = 20
    lm = client(fake.url)
    out = lm.generate([[1] * 8], [100], SamplingConfig(), [1])[0]
    assert fake.bodies[-1]["max_tokens"] == 10 and out.max_new_tokens == 10  # whole groups that fit
    with pytest.raises(RemoteLMRequestError, match="--max-model-len"):
        lm.generate([[1] * 17], [100], SamplingConfig(), [1])


def test_progress_reports_and_interrupts(fake):
    fake.delay_s = 0.05
    seen: list[Progress] = []

    def stop_after_some(p: Progress) -> bool:
        seen.append(p)
        return p.done >= 3

    outs = client(fake.url).generate([[1, 2], [1, 3]], [11, 11], SamplingConfig(), [1, 2], progress=stop_after_some)
    assert all(o.stop_reason is StopReason.INTERRUPTED and 3 <= len(o.tokens) < 11 for o in outs)
    assert seen[0].stage == "generate" and seen[0].total == 11 and seen[-1].done >= 3
    deadline = time.monotonic() + 3
    while fake.disconnects < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.disconnects == 2  # the server saw both streams closed (vLLM aborts such requests)


def test_cancel_raised_by_the_callback_propagates_and_closes_the_streams(fake):
    fake.delay_s = 0.05

    class Cancelled(Exception):
        pass

    def cancel(p: Progress) -> bool:
        if p.done >= 2:
            raise Cancelled()
        return False

    started = time.monotonic()
    with pytest.raises(Cancelled):
        client(fake.url).generate([[1, 2]] * 3, [11] * 3, SamplingConfig(), [1, 2, 3], progress=cancel)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 3
    while fake.disconnects < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.disconnects == 3


def test_config_normalises_urls_and_rejects_bad_ones():
    assert RemoteLMConfig("gpu-box:8000/v1/").url == "http://gpu-box:8000"
    assert RemoteLMConfig("https://h/proxy/v1").base_path == "/proxy"
    for bad in ("ftp://h", "http://", ""):
        with pytest.raises(ValueError):
            RemoteLMConfig(bad)
    with pytest.raises(ValueError, match="max_concurrency"):
        RemoteLMConfig("h", max_concurrency=0)


def test_cli_edits_with_the_lm_on_a_server_and_no_lm_weights_on_disk(fake, tiny_model_root, short_sample_clip,
                                                                      tmp_path):
    """The whole CLI path with --lm-server: the folder lacks Step1's weights and config, which the worker
    never reads; the fake server's ids are decoded locally."""
    import shutil

    import soundfile as sf

    from comfyui_step_audio_editx.cli import main

    models = tmp_path / "models"
    shutil.copytree(tiny_model_root, models, ignore=lambda folder, names: [
        n for n in names if folder.endswith("Step-Audio-EditX") and (n.endswith(".safetensors") or n == "config.json"
                                                                     or n == "model.safetensors.index.json")])
    assert not list((models / "Step-Audio-EditX").glob("*.safetensors"))
    clip, out = short_sample_clip("remote_cli", "I just heard the news"), tmp_path / "out.wav"
    assert main(["edit", str(clip), "--edit-type", "emotion", "--value", "happy", "-o", str(out), "--models-dir",
                 str(models), "--device", "cpu", "--lm-server", fake.url, "--seed", "3"]) == 0
    assert sf.info(str(out)).frames > 0
    row = [b for b in fake.bodies if b.get("stream")][0]
    assert row["prompt"][0] == C.BOS_ID and row["vllm_xargs"] == {plugin.XARG_CONSTRAIN: 1}
    assert main(["edit", str(clip), "--edit-type", "emotion", "--value", "happy", "-o", str(out), "--models-dir",
                 str(models), "--device", "cpu"]) == 2  # the local path does need the weights


def test_batch_edit_sends_every_row_at_once(fake, tiny_model_root, short_sample_clip, monkeypatch):
    """The engine's length groups are for local batches: with a server, every row of a pass goes out at once
    and the server batches them (here even with local groups of one row)."""
    import soundfile as sf
    import torch

    from comfyui_step_audio_editx.engines.step_audio_editx import EditRequest, EngineConfig, StepAudioEditX
    from comfyui_step_audio_editx.engines.step_audio_editx import engine as engine_module

    monkeypatch.setattr(engine_module, "MAX_GENERATE_BATCH", 1)  # a local pass would run its rows one by one
    fake.delay_s = 0.02
    engine = StepAudioEditX(EngineConfig(search_roots=(str(tiny_model_root),), device="cpu",
                                         lm_server=RemoteLMConfig(fake.url))).load()
    assert "lm" not in engine.modules()
    data, sr = sf.read(short_sample_clip("remote_batch", "I just heard the news"), dtype="float32")
    requests = [EditRequest(torch.from_numpy(data), sr, "I just heard the news", "emotion", "happy", seed=i)
                for i in range(3)]
    results = engine.batch_edit(requests)
    assert fake.max_in_flight == 3 and all(r.passes[0].n_generated_tokens == 10 for r in results)
    assert len({b["seed"] for b in fake.bodies if b.get("stream")}) == 3
