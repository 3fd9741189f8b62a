"""Every bad input of docs/bad-inputs.md, tried as a user would: exit code 2 and one line saying what to do,
before any model work (the model folder below does not exist, and downloading is made impossible, so a
check that ran after loading or downloading would fail with a different message)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from comfyui_step_audio_editx.cli import main
from comfyui_step_audio_editx.engines.step_audio_editx import SamplingConfig
from comfyui_step_audio_editx.utils.files.outputs import OutputWriteError, write_audio_atomic
from comfyui_step_audio_editx.utils.files.text_files import read_text_file



@pytest.fixture(scope="module")
def clip(short_sample_clip):
    return short_sample_clip("clip", "I just heard the news")


@pytest.fixture(autouse=True)
def no_model_work(monkeypatch, tmp_path):
    """Loading or downloading is a test failure here: every check must come first."""
    import huggingface_hub

    from comfyui_step_audio_editx.engines.step_audio_editx import engine

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("a download started"))
    monkeypatch.setattr(engine.StepAudioEditX, "load", lambda self: pytest.fail("the model was loaded"))


def run(caplog, *argv) -> str:
    """Run the CLI; assert exit code 2 and exactly one error line; return that line."""
    caplog.clear()
    assert main([*argv, "--models-dir", "/nonexistent/models", "--download", "--device", "cpu"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Traceback" not in errors[0], errors
    return errors[0]


def edit(clip, *extra) -> list[str]:
    return ["edit", str(clip), "--edit-type", "emotion", "--value", "happy", *extra]


# -- outputs ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("out/o.txt", "must end in .wav or .flac"),
    ("x.mp3", "must end in .wav or .flac"),
    ("noext", "no suffix"),
    ("out/", "is a folder"),
])
def test_bad_output_names(caplog, clip, tmp_path, name, expected):
    assert expected in run(caplog, *edit(clip, "-o", str(tmp_path / name) + ("/" if name.endswith("/") else "")))


def test_output_is_an_existing_folder(caplog, clip, tmp_path):
    assert "is a folder" in run(caplog, *edit(clip, "-o", str(tmp_path)))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_in_an_unwritable_place(caplog, clip):
    assert "cannot write" in run(caplog, *edit(clip, "-o", "/proc/x.wav"))


def test_output_under_a_file(caplog, clip, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in run(caplog, *edit(clip, "-o", str(tmp_path / "afile" / "o.wav")))


def test_output_equal_to_input(caplog, clip):
    before = clip.read_bytes()
    assert "is the input file" in run(caplog, *edit(clip, "-o", str(clip)))
    assert clip.read_bytes() == before


def test_full_disk_leaves_no_half_written_file(tmp_path, monkeypatch):
    import soundfile

    target = tmp_path / "o.wav"
    target.write_bytes(b"previous result")
    real_write = soundfile.write

    def full_disk(path, data, *args, **kwargs):
        real_write(path, data[: len(data) // 2], *args, **kwargs)  # half of it reached the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(soundfile, "write", full_disk)
    with pytest.raises(OutputWriteError, match="No space left on device"):
        write_audio_atomic(target, np.zeros(4800, np.float32), 24000)
    assert target.read_bytes() == b"previous result"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]  # no temporary file left behind


def test_atomic_write_gives_normal_permissions(tmp_path):
    path = write_audio_atomic(tmp_path / "o.wav", np.zeros(2400, np.float32), 24000)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sf.info(path).subtype == "PCM_16"


# -- batch manifests -------------------------------------------------------------------------------------------

def manifest(tmp_path, *rows, raw: bytes | None = None) -> Path:
    path = tmp_path / "jobs.jsonl"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def batch(path, tmp_path) -> list[str]:
    return ["batch", str(path), "--out-dir", str(tmp_path / "out")]


@pytest.mark.parametrize("rows, expected", [
    ([{"input": "{clip}", "edit_type": "emotion", "value": "happy", "output": "a.wav"},
      {"input": "{clip}", "edit_type": "denoise", "output": "a.wav"}], "jobs.jsonl:2: output 'a.wav' is also the output of jobs.jsonl:1"),
    ([{"input": "{clip}", "edit_type": "denoise", "output": "../escape.wav"}], "points outside --out-dir"),
    ([{"input": "{clip}", "edit_type": "denoise", "output": "/tmp/elsewhere.wav"}], "points outside --out-dir"),
    ([{"input": "{clip}", "edit_type": "denoise", "output": "b.mp3"}], "must end in .wav or .flac"),
    ([{"input": "{clip}", "edit_type": "denoise", "seed": 1}, {"input": "{clip}", "edit_type": "denoise", "seed": "abc"}],
     'jobs.jsonl:2: "seed" must be a whole number, got "abc"'),
    ([{"input": "{clip}", "edit_type": "denoise", "iterations": 2.5}], '"iterations" must be a whole number'),
    ([{"input": "{clip}", "edit_type": "emotion", "value": "hapy"}], "jobs.jsonl:1: "),
    ([{"input": "{clip}", "edit_type": "emotion", "value": "happy", "iterations": 9}], "iterations must be a whole number from 1 to 5"),
    ([{"input": "{clip}", "edit-type": "emotion"}], 'unknown field "edit-type". Did you mean "edit_type"?'),
    ([{"input": "{clip}"}], 'missing "edit_type"'),
    (["[1, 2]"], "must be a JSON object"),
    (["{not json"], "jobs.jsonl:1: not valid JSON"),
    (["# only a comment"], "holds no requests"),
    ([{"input": "missing.wav", "edit_type": "denoise"}], "jobs.jsonl:1: audio file not found"),
])
def test_bad_manifest_rows(caplog, clip, tmp_path, rows, expected):
    lonely = tmp_path / "lonely.wav"
    lonely.write_bytes(clip.read_bytes())
    rows = [json.loads(json.dumps(r).replace("{clip}", str(clip)).replace("{lonely}", str(lonely)))
            if isinstance(r, dict) else r for r in rows]
    message = run(caplog, *batch(manifest(tmp_path, *rows), tmp_path))
    assert expected in message
    assert "--text" not in message  # no such flag for batch rows


def test_manifest_that_is_a_folder(caplog, tmp_path):
    assert "is a folder" in run(caplog, "batch", str(tmp_path), "--out-dir", str(tmp_path / "out"))


def test_manifest_not_utf8_names_the_file(caplog, tmp_path):
    path = manifest(tmp_path, raw=b'{"input": "caf\xe9.wav", "edit_type": "denoise"}\n')
    message = run(caplog, *batch(path, tmp_path))
    assert "jobs.jsonl" in message and "not UTF-8" in message


def test_manifest_with_a_bom_is_read(caplog, clip, tmp_path):
    row = json.dumps({"input": str(clip), "edit_type": "emotion", "value": "hapy"})
    path = manifest(tmp_path, raw=b"\xef\xbb\xbf" + row.encode())
    assert "happy" in run(caplog, *batch(path, tmp_path))  # reached the vocabulary check, not a JSON error


# -- arguments -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, expected", [
    (["--temperature", "nan"], "--temperature: temperature must be a finite number"),
    (["--temperature", "inf"], "--temperature: temperature must be a finite number"),
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--top-p", "0"], "--top-p: top_p must be in (0, 1]"),
    (["--top-p", "nan"], "--top-p: top_p must be a finite number"),
    (["--top-k", "-3"], "--top-k"),
    (["--max-new-tokens", "2"], "--max-new-tokens"),
    (["--iterations", "9"], "iterations must be a whole number from 1 to 5"),
    (["--device", "tpu"], "--device: Unknown device 'tpu'"),
    (["--device", "mps"], "--device: Device 'mps' was asked for"),
])
def test_bad_arguments_before_any_model_work(caplog, clip, tmp_path, extra, expected):
    if extra == ["--device", "mps"]:
        import torch

        if torch.backends.mps.is_available():
            pytest.skip("this machine has an Apple GPU")
    args = edit(clip, "-o", str(tmp_path / "o.wav"), *extra)
    if "--device" in extra:  # run() passes --device cpu last; put the bad one after it
        args = [a for a in args if a not in extra]
        caplog.clear()
        assert main([*args, "--models-dir", "/nonexistent", "--download", *extra]) == 2
        assert expected in caplog.text
        return
    assert expected in run(caplog, *args)


def test_edit_value_typo_is_not_reported_as_a_download_failure(caplog, clip, tmp_path):
    message = run(caplog, "edit", str(clip), "--edit-type", "emotion", "--value", "hapy", "-o", str(tmp_path / "o.wav"))
    assert "happy" in message and "download" not in message.lower()


@pytest.mark.parametrize("text, expected", [
    ("Hello <Laughterr> there.", "Laughter"),
    ("<Laughter> [pause:300ms]", "nothing to speak"),
    ("Hello [pause:abc] there.", "pause"),
    ("   ", "nothing to speak"),
])
def test_bad_clone_text_before_any_model_work(caplog, clip, tmp_path, text, expected):
    assert expected in run(caplog, "clone", "--prompt-audio", str(clip), "--text", text, "-o", str(tmp_path / "c.wav"))


# -- transcripts -----------------------------------------------------------------------------------------------

def test_blank_transcripts_are_recognised_not_errors(monkeypatch, clip, tmp_path):
    """Blank means "recognise it": every check passes and the run goes on to the model (stopped there)."""
    from comfyui_step_audio_editx.engines.step_audio_editx import engine

    reached = []

    def load(self):
        reached.append(self)
        raise ValueError("stopped at the model load")

    monkeypatch.setattr(engine.StepAudioEditX, "load", load)
    lonely = tmp_path / "lonely.wav"
    lonely.write_bytes(clip.read_bytes())
    out = str(tmp_path / "o.wav")
    for argv in (["clone", "--prompt-audio", str(clip), "--prompt-text", "  ", "--text", "Hi there.", "-o", out],
                 [*edit(clip, "--text", "  ", "-o", out)], [*edit(lonely, "-o", out)],
                 ["batch", str(manifest(tmp_path, {"input": str(lonely), "edit_type": "emotion", "value": "happy"})),
                  "--out-dir", str(tmp_path / "out")]):
        assert main([*argv, "--models-dir", "/nonexistent/models", "--device", "cpu"]) == 2
    assert len(reached) == 4


def test_missing_text_file_names_the_flag(caplog, clip, tmp_path):
    message = run(caplog, *edit(clip, "--text-file", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o.wav")))
    assert message.startswith("--text-file") and "not found" in message and "pass --text" not in message


def test_non_utf8_transcript_names_the_file(caplog, clip, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    message = run(caplog, *edit(clip, "--text-file", str(bad), "-o", str(tmp_path / "o.wav")))
    assert "latin1.txt" in message and "not UTF-8" in message


def test_utf8_bom_is_dropped_like_the_comfyui_loader(tmp_path):
    from comfyui_step_audio_editx.nodes.load_audio_node import read_transcript

    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "a.txt").write_bytes("\ufeffHello there".encode("utf-8"))
    assert read_text_file(tmp_path / "a.txt").strip() == read_transcript(tmp_path / "a.wav") == "Hello there"


# -- audio inputs ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    (b"", "the file is empty"),
    (b"hello, not audio", "Format not recognised"),
])
def test_unreadable_audio(caplog, tmp_path, content, expected):
    path = tmp_path / "in.wav"
    path.write_bytes(content)
    path.with_suffix(".txt").write_text("words", encoding="utf-8")
    message = run(caplog, *edit(path, "-o", str(tmp_path / "o.wav")))
    assert expected in message and "Use a WAV, FLAC or OGG file" in message


def constant_clip(tmp_path, seconds: float, amplitude: float = 0.5) -> Path:
    path = tmp_path / "in.wav"
    sf.write(path, np.full(int(8000 * seconds), amplitude, np.float32), 8000)
    path.with_suffix(".txt").write_text("words", encoding="utf-8")
    return path


@pytest.mark.parametrize("seconds, amplitude, expected", [(0.2, 0.5, "at least 0.5 s"), (1201, 0.5, "at most 1200 s"),
                                                          (1.0, 0.0, "silent")])
def test_unusable_audio(caplog, tmp_path, seconds, amplitude, expected):
    path = constant_clip(tmp_path, seconds, amplitude)
    assert expected in run(caplog, *edit(path, "-o", str(tmp_path / "o.wav")))


def test_clips_over_30_s_are_edited_in_pieces_but_are_no_clone_reference(caplog, tmp_path):
    """An edit cuts a long clip into pieces itself, so the CLI's checks let 31 s through (to the model load,
    which this module forbids); a clone reference stays limited to 30 s."""
    path = constant_clip(tmp_path, 31)
    with pytest.raises(pytest.fail.Exception, match="the model was loaded"):
        main([*edit(path, "-o", str(tmp_path / "o.wav")), "--models-dir", str(tmp_path), "--device", "cpu"])
    assert "at most 30 s" in run(caplog, "clone", "--prompt-audio", str(path), "--text", "Hi there.",
                                 "-o", str(tmp_path / "c.wav"))


def test_missing_input(caplog, tmp_path):
    assert "audio file not found" in run(caplog, *edit(tmp_path / "nope.wav", "-o", str(tmp_path / "o.wav")))


# -- Python API and console ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("temperature", float("nan")), ("temperature", float("inf")),
                                          ("top_p", float("nan")), ("temperature", "0.7"), ("top_k", 2.5)])
def test_api_rejects_non_finite_sampling(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})


def test_help_imports_neither_torch_nor_the_engine():
    code = ("import sys; from comfyui_step_audio_editx import cli; cli.build_parser().format_help(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.endswith('.engine')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("temperature", ["nan", "inf", float("nan")])
def test_engine_node_rejects_non_finite_temperature(monkeypatch, tmp_path, temperature):
    """ComfyUI turns the widget string "nan" into float('nan'), which passes its min/max check."""
    from comfyui_step_audio_editx.nodes import comfy_bridge
    from comfyui_step_audio_editx.nodes.engine_node import StepAudioEditXEngine

    monkeypatch.setattr(comfy_bridge, "tts_model_roots", lambda: [str(tmp_path)])
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        StepAudioEditXEngine().make("auto (download if missing)", "cpu", "auto", "auto", True, True, 8192,
                                    float(temperature), 0)


def test_token_bar_ends_at_the_tokens_made(capsys):
    """A call that stops before its cap ends its bar at 100 % of what it made; the final count is drawn."""
    from comfyui_step_audio_editx.cli import _TokenBar
    from comfyui_step_audio_editx.engines.step_audio_editx import Progress

    bar = _TokenBar()
    for done in range(1, 342):
        bar(Progress("generate", done, 355))
    inner = bar.bar
    bar(Progress("generate", 1, 40, call=2, calls=2))  # the next call closes the first bar as finished
    assert (inner.n, inner.total) == (341, 341)
    for done in range(2, 41):
        bar(Progress("generate", done, 40, call=2, calls=2))
    second = bar.bar
    bar.close(finished=True)
    assert (second.n, second.total) == (40, 40)
    assert "40/40" in capsys.readouterr().err


def test_huggingface_hub_messages_print_once():
    code = ("from comfyui_step_audio_editx.cli import _configure_logging; _configure_logging('INFO'); "
            "from huggingface_hub.utils import logging as hub_logging; "
            "hub_logging.get_logger('huggingface_hub.file_download').warning('retrying in 1 s')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stderr.count("retrying in 1 s") == 1, out.stderr


@pytest.mark.parametrize("extra, expected", [
    (["--editx-dir", "/etc/hostname"], "--editx-dir /etc/hostname is a file"),
    (["--attention", "xformers"], "--attention xformers is unavailable on cpu"),
])
def test_bad_model_options_before_any_model_work(caplog, clip, tmp_path, extra, expected):
    if "xformers" in extra:
        import torch

        if torch.cuda.is_available():
            pytest.skip("xformers may run on this machine's GPU")
    if "/etc/hostname" in extra and not Path("/etc/hostname").is_file():
        pytest.skip("needs /etc/hostname")
    assert expected in run(caplog, *edit(clip, "-o", str(tmp_path / "o.wav"), *extra))
