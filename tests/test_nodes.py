"""The ComfyUI node classes without ComfyUI: input specs, frozen widget order, validation, example workflows
and the boundary helpers (the node functions themselves: test_node_functions.py)."""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import vocabulary
from comfyui_step_audio_editx.engines.step_audio_editx.constants import OUTPUT_SAMPLE_RATE
from comfyui_step_audio_editx.engines.step_audio_editx.engine import EngineConfig
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import ATTENTION_CHOICES, DTYPE_CHOICES
from comfyui_step_audio_editx.engines.step_audio_editx.types import (
    AudioResult,
    GenerationSettings,
    PassResult,
    Progress,
    StopReason,
    Timings,
)
from comfyui_step_audio_editx.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy_bridge
from comfyui_step_audio_editx.nodes.audio_batch_node import BatchInputError, batch_transcripts
from comfyui_step_audio_editx.nodes.audio_io import (
    AudioInputError,
    split_batch,
    to_comfy_audio,
    trailing_padding,
)
from comfyui_step_audio_editx.nodes.edit_inputs import EditInputError, build_edit_requests, per_clip_lines
from comfyui_step_audio_editx.nodes.engine_cache import EngineCache, EngineHandle
from comfyui_step_audio_editx.nodes.engine_node import build_handle
from comfyui_step_audio_editx.nodes.info import edit_info
from comfyui_step_audio_editx.nodes.model_folders import (
    AUTO_DOWNLOAD,
    ModelFolderError,
    list_model_folders,
    resolve_model_choice,
)
from comfyui_step_audio_editx.nodes.progress import TokenProgress
from comfyui_step_audio_editx.nodes.widgets import SEED_MAX
from node_doubles import FakeEngine, audio, editor_inputs, speech

REPO_ROOT = Path(__file__).resolve().parents[1]
NODES_DIR = REPO_ROOT / "nodes"
EXAMPLES_DIR = REPO_ROOT / "example_workflows"
API_DIR = EXAMPLES_DIR / "api"  # API format lives one level down: ComfyUI's Templates menu lists only the top
SAMPLE_WAV = "sample_speech.wav"

# Saved workflows store widget values by position: this order is frozen. New inputs are only appended.
EXPECTED_INPUTS: dict[str, list[str]] = {
    "StepAudioEditXEngine": ["model", "device", "dtype", "attention", "fast_decode", "dynamic_token",
                             "max_new_tokens", "temperature", "seed", "weights_release",
                             "quantize", "lm_server"],
    "StepAudioEditXAudioEditor": ["audio", "transcript", "edit_type", "emotion", "style", "speed",
                                  "paralinguistic_text", "n_edit_iterations", "dynamic_token", "seed", "engine"],
    "StepAudioEditXClone": ["reference_audio", "reference_text", "text", "seed", "engine"],
    "StepAudioEditXLoadAudioWithTranscript": ["audio"],
    "StepAudioEditXAudioBatch": ["audio_1", "transcript_1", "audio_2", "transcript_2"],
}

# Core ComfyUI nodes the examples use, with the widgets_values lengths the frontend writes for them.
CORE_NODE_WIDGET_VALUES: dict[str, set[int]] = {
    "LoadAudio": {3}, "SaveAudio": {1, 2}, "SaveAudioMP3": {2}, "PreviewAudio": {0, 1}, "PreviewAny": {0},
}
UI_ONLY_NODES: dict[str, set[int]] = {"Note": {1}, "MarkdownNote": {1}}  # frontend-only, absent from API format
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


# --- helpers ------------------------------------------------------------------------------------------
def all_inputs(cls) -> dict[str, tuple]:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def is_widget(spec: tuple) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def widget_value_count(name: str, spec: tuple) -> int:
    """Values one widget takes in a UI workflow: +1 for a seed control, +2 for an upload button and preview."""
    opts = spec[1] if len(spec) > 1 else {}
    count = 1
    if spec[0] == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
        count += 1
    if opts.get("audio_upload") or opts.get("image_upload"):
        count += 2
    return count


def check_widget_value(node: str, name: str, spec: tuple, value) -> None:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    where = f"{node}.{name}={value!r}"
    if isinstance(kind, list):
        assert value in kind, f"{where} not among the combo's values"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: use a JSON boolean"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    if kind in ("INT", "FLOAT"):
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where} outside min/max"


# --- import and registration --------------------------------------------------------------------------
def test_nodes_import_without_comfyui_and_only_the_bridge_touches_it():
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules
    pattern = re.compile(r"^\s*(import|from)\s+(comfy\b|comfy_extras|folder_paths|server\b)|import_module\(\"comfy",
                         re.MULTILINE)
    offenders = [p.name for p in NODES_DIR.glob("*.py")
                 if p.name != "comfy_bridge.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert comfy_bridge.tts_model_roots() == [] and comfy_bridge.input_audio_files() == []


def test_mappings_name_every_node_once_with_a_display_name():
    assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS) == set(EXPECTED_INPUTS)
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert NODE_DISPLAY_NAME_MAPPINGS[name].startswith("Step Audio EditX")
        assert callable(getattr(cls(), cls.FUNCTION)) and cls.CATEGORY == "audio/Step-Audio-EditX"
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)


# --- input specs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED_INPUTS))
def test_widget_order_is_frozen(name):
    assert list(all_inputs(NODE_CLASS_MAPPINGS[name])) == EXPECTED_INPUTS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_INPUTS))
def test_input_specs_are_well_formed(name, tts_root):
    cls = NODE_CLASS_MAPPINGS[name]
    for input_name, spec in all_inputs(cls).items():
        opts = spec[1] if len(spec) > 1 else {}
        assert opts.get("tooltip"), f"{name}.{input_name} has no tooltip"
        if "default" in opts:
            check_widget_value(name, input_name, spec, opts["default"])
        if input_name == "seed":
            assert spec[0] == "INT" and opts["control_after_generate"] is True and opts["max"] == SEED_MAX
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    assert list(params)[1:len(EXPECTED_INPUTS[name]) + 1] == EXPECTED_INPUTS[name]


def test_combos_offer_the_official_vocabulary_only():
    editor = all_inputs(NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"])
    assert tuple(editor["edit_type"][0]) == vocabulary.EDIT_TYPES
    assert tuple(editor["emotion"][0]) == vocabulary.EMOTIONS
    assert tuple(editor["style"][0]) == vocabulary.STYLES
    assert tuple(editor["speed"][0]) == vocabulary.SPEEDS
    assert editor["n_edit_iterations"][1]["max"] == vocabulary.MAX_EDIT_ITERATIONS
    engine = all_inputs(NODE_CLASS_MAPPINGS["StepAudioEditXEngine"])
    assert tuple(engine["attention"][0]) == ATTENTION_CHOICES and tuple(engine["dtype"][0]) == DTYPE_CHOICES
    assert engine["dynamic_token"][1]["default"] is True and editor["dynamic_token"][1]["default"] is True


def test_generating_nodes_get_the_node_id_for_their_progress_bar():
    for name in ("StepAudioEditXAudioEditor", "StepAudioEditXClone"):
        assert NODE_CLASS_MAPPINGS[name].INPUT_TYPES()["hidden"] == {"unique_id": "UNIQUE_ID"}


def test_model_combo_lists_hub_folders_not_files(tmp_path):
    root = tmp_path / "TTS"
    for folder, model_type in (("Step-Audio-EditX", "step1"), ("org/My-EditX", "step1"), ("Other-TTS", "llama")):
        (root / folder).mkdir(parents=True)
        (root / folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (root / "Step-Audio-Tokenizer").mkdir()
    (root / "stray.safetensors").write_bytes(b"")
    assert list_model_folders([root, tmp_path / "missing"]) == ["Step-Audio-EditX", "org/My-EditX"]
    assert resolve_model_choice("org/My-EditX", [root]) == (str((root / "org/My-EditX").resolve()), False)
    assert resolve_model_choice(AUTO_DOWNLOAD, [root]) == (None, True)
    with pytest.raises(ModelFolderError, match="not under any TTS model folder"):
        resolve_model_choice("Gone", [root])


# --- VALIDATE_INPUTS ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(n for n, c in NODE_CLASS_MAPPINGS.items() if hasattr(c, "VALIDATE_INPUTS")))
def test_validate_inputs_names_only_inputs_it_checks(name):
    cls = NODE_CLASS_MAPPINGS[name]
    spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
    assert spec.varkw is None and spec.varargs is None  # **kwargs would switch off ComfyUI's own checks
    assert set(spec.args[1:]) <= set(EXPECTED_INPUTS[name])
    assert cls.VALIDATE_INPUTS() is True  # every checked input linked (None): nothing to check yet


def test_validate_inputs_declares_one_input():
    """ComfyUI reports a failed VALIDATE_INPUTS once per input it declares: one input, one message."""
    for name, cls in NODE_CLASS_MAPPINGS.items():
        if hasattr(cls, "VALIDATE_INPUTS"):
            assert len(inspect.getfullargspec(cls.VALIDATE_INPUTS).args[1:]) == 1, name


def test_editor_validation_messages(fake_engines):
    v = NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"].VALIDATE_INPUTS
    assert v(edit_type="style") is True
    assert "Did you mean 'emotion'" in v(edit_type="emotions")
    editor = NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]()  # the checks needing several widgets: at run time
    for inputs, message in ((dict(edit_type="paralinguistic", paralinguistic_text="hi [Laughte] x"), "[laugh]"),
                            (dict(edit_type="paralinguistic", paralinguistic_text="hi there"),
                             "no paralinguistic [tag]")):
        with pytest.raises(ValueError, match=re.escape(message)):
            editor.edit(**editor_inputs(**inputs))
    assert fake_engines.engines() == []  # nothing loaded (an empty transcript is recognised at run time instead)


def test_engine_validation_messages(fake_engines, tts_root):
    v = NODE_CLASS_MAPPINGS["StepAudioEditXEngine"].VALIDATE_INPUTS
    assert v(device="auto") is True and v(device="cpu") is True
    assert "Unknown device" in v(device="tpu")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in v(device="cuda")
    with pytest.raises(ValueError, match="xformers"):  # checked when the node runs, before anything loads
        build_handle("Step-Audio-EditX", "cpu", "auto", "xformers")
    assert fake_engines.engines() == []


def test_clone_and_loader_validation_messages(tts_root, tmp_path, monkeypatch):
    v = NODE_CLASS_MAPPINGS["StepAudioEditXClone"].VALIDATE_INPUTS
    assert "text is empty" in v(text="")
    assert v(text="Hello <laugh> [pause:1s] <emotion:happy> you") is True
    assert "Did you mean <laugh>?" in v(text="Hello <Laughtr> you")
    loader = NODE_CLASS_MAPPINGS["StepAudioEditXLoadAudioWithTranscript"]
    assert loader.VALIDATE_INPUTS(audio=SAMPLE_WAV) is True
    assert "Invalid audio file" in loader.VALIDATE_INPUTS(audio="missing.wav")
    (tmp_path / "lonely.wav").write_bytes((EXAMPLES_DIR / SAMPLE_WAV).read_bytes())
    monkeypatch.setattr(comfy_bridge, "input_file_path", lambda name: tmp_path / name)
    assert loader.VALIDATE_INPUTS(audio="lonely.wav") is True  # the .txt is optional (denoise, vad)
    clip, transcript = loader().load("lonely.wav")
    assert transcript == "" and clip["waveform"].shape[-1] > 0


def test_loader_reads_the_clip_and_its_transcript(tts_root):
    loader = NODE_CLASS_MAPPINGS["StepAudioEditXLoadAudioWithTranscript"]()
    clip, transcript = loader.load(SAMPLE_WAV)
    assert clip["waveform"].dtype == torch.float32 and clip["waveform"].dim() == 3
    assert clip["sample_rate"] == 24000 and 6.0 < clip["waveform"].shape[-1] / 24000 < 7.0
    assert transcript == (EXAMPLES_DIR / "sample_speech.txt").read_text().strip()


def test_loader_is_changed_follows_the_audio_and_the_transcript(tmp_path, monkeypatch):
    """ComfyUI re-runs the loader only when IS_CHANGED changes: editing either file must change it."""
    import shutil

    loader = NODE_CLASS_MAPPINGS["StepAudioEditXLoadAudioWithTranscript"]
    shutil.copy(EXAMPLES_DIR / SAMPLE_WAV, tmp_path / "clip.wav")
    (tmp_path / "clip.txt").write_text("First words.", encoding="utf-8")
    monkeypatch.setattr(comfy_bridge, "input_file_path", lambda name: tmp_path / name)
    first = loader.IS_CHANGED("clip.wav")
    assert loader.IS_CHANGED("clip.wav") == first  # nothing changed: ComfyUI may reuse the output
    (tmp_path / "clip.txt").write_text("Other words.", encoding="utf-8")
    second = loader.IS_CHANGED("clip.wav")
    assert second != first
    data = bytearray((tmp_path / "clip.wav").read_bytes())
    data[-2:] = bytes([data[-2] ^ 0xFF, data[-1] ^ 0xFF])  # one sample of the audio
    (tmp_path / "clip.wav").write_bytes(bytes(data))
    assert loader.IS_CHANGED("clip.wav") not in (first, second)


# --- example workflows --------------------------------------------------------------------------------------
def example_pairs() -> list[tuple[Path, Path]]:
    ui = sorted(EXAMPLES_DIR.glob("*.json"))
    return [(p, API_DIR / (p.stem + "_api.json")) for p in ui]


def test_each_example_ships_in_ui_and_api_format():
    names = {p.stem.removeprefix("step_audio_editx_") for p, _ in example_pairs()}
    assert {"edit_emotion", "clone_inline_tags", "batch_edit"} <= names
    assert not list(EXAMPLES_DIR.glob("*_api.json"))  # an API file in the Templates menu would not open
    assert len(list(API_DIR.glob("*_api.json"))) == len(example_pairs())
    for _, api in example_pairs():
        assert api.is_file()


@pytest.mark.parametrize("ui_path,api_path", example_pairs(), ids=lambda p: p.name)
def test_api_example_matches_input_types(ui_path, api_path, tts_root):
    prompt = json.loads(api_path.read_text(encoding="utf-8"))
    for node_id, node in prompt.items():
        cls_name = node["class_type"]
        assert cls_name in NODE_CLASS_MAPPINGS or cls_name in CORE_NODE_WIDGET_VALUES, cls_name
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link [node_id, output slot]
                src = prompt[value[0]]["class_type"]
                if src in NODE_CLASS_MAPPINGS:
                    assert value[1] < len(NODE_CLASS_MAPPINGS[src].RETURN_TYPES)
        if cls_name not in NODE_CLASS_MAPPINGS:
            continue
        cls = NODE_CLASS_MAPPINGS[cls_name]
        spec = cls.INPUT_TYPES()
        assert set(spec["required"]) <= set(node["inputs"]), f"node {node_id}: missing required inputs"
        assert set(node["inputs"]) <= set(all_inputs(cls)), f"node {node_id}: unknown inputs"
        for name, value in node["inputs"].items():
            input_spec = all_inputs(cls)[name]
            if isinstance(value, list):
                src_cls = NODE_CLASS_MAPPINGS.get(prompt[value[0]]["class_type"])
                expected = input_spec[0] if not isinstance(input_spec[0], list) else "COMBO"
                if src_cls is not None:
                    assert src_cls.RETURN_TYPES[value[1]] == expected, f"node {node_id}.{name}: link type"
            else:
                assert is_widget(input_spec), f"node {node_id}.{name}: a socket needs a link"
                check_widget_value(cls_name, name, input_spec, value)
        if hasattr(cls, "VALIDATE_INPUTS"):
            args = inspect.getfullargspec(cls.VALIDATE_INPUTS).args[1:]
            values = {a: node["inputs"][a] for a in args if not isinstance(node["inputs"].get(a, []), list)}
            assert cls.VALIDATE_INPUTS(**values) is True


@pytest.mark.parametrize("ui_path,api_path", example_pairs(), ids=lambda p: p.name)
def test_ui_example_is_a_consistent_graph(ui_path, api_path, tts_root):
    ui = json.loads(ui_path.read_text(encoding="utf-8"))
    prompt = json.loads(api_path.read_text(encoding="utf-8"))
    assert {"last_node_id", "last_link_id", "nodes", "links", "version"} <= set(ui)  # the frontend's schema
    for node in ui["nodes"]:
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "properties", "widgets_values"} <= set(node)
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    assert ui["last_node_id"] >= max(nodes) and ui["last_link_id"] >= max(links)
    for link_id, src, src_slot, dst, dst_slot, kind in links.values():
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[dst]["inputs"][dst_slot]["type"] == kind
    assert {str(i) for i, n in nodes.items() if n["type"] not in UI_ONLY_NODES} == set(prompt)
    for node_id, node in nodes.items():
        kind, values = node["type"], node["widgets_values"]
        if kind in UI_ONLY_NODES or kind in CORE_NODE_WIDGET_VALUES:
            assert len(values) in {**UI_ONLY_NODES, **CORE_NODE_WIDGET_VALUES}[kind], f"{kind} widgets_values"
            continue
        widgets = [(n, s) for n, s in all_inputs(NODE_CLASS_MAPPINGS[kind]).items() if is_widget(s)]
        assert len(values) == sum(widget_value_count(n, s) for n, s in widgets), f"node {node_id} widgets_values"
        api_inputs = prompt[str(node_id)]["inputs"]
        position = 0
        for name, spec in widgets:  # the UI values agree with the API format, position by position
            if not isinstance(api_inputs.get(name), list):
                assert values[position] == api_inputs[name], f"node {node_id}.{name}"
            position += widget_value_count(name, spec)


# --- boundary helpers ----------------------------------------------------------------------------------------
def test_split_batch_trims_each_rows_trailing_padding():
    long, short = speech(1.0, channels=2), speech(0.25, channels=2, seed=1)
    clips = split_batch(audio(long, short))
    assert [c.waveform.shape[-1] for c in clips] == [16000, 4000]
    assert [c.trimmed_samples for c in clips] == [0, 12000] and clips[1].trimmed_s == 0.75
    single = split_batch(audio(torch.cat([short, torch.zeros(2, 800)], dim=1)))
    assert single[0].waveform.shape[-1] == 4800 and single[0].trimmed_samples == 0  # B == 1: never padded
    assert trailing_padding(torch.zeros(1, 10)) == 0


@pytest.mark.parametrize("bad,message", [
    ({"waveform": torch.zeros(1, 10)}, "not a ComfyUI AUDIO"),
    ({"waveform": torch.zeros(10), "sample_rate": 16000}, "batch, channels, samples"),
    ({"waveform": torch.zeros(1, 1, 10), "sample_rate": 0}, "positive integer"),
    ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, "empty"),
])
def test_bad_audio_values_are_named(bad, message):
    with pytest.raises(AudioInputError, match=message):
        split_batch(bad)


def test_outputs_are_mono_float32_batches_padded_to_the_longest():
    out = to_comfy_audio([torch.ones(5), torch.ones(3, dtype=torch.float64)], OUTPUT_SAMPLE_RATE)
    assert out["waveform"].shape == (2, 1, 5) and out["waveform"].dtype == torch.float32
    assert out["waveform"][1, 0].tolist() == [1, 1, 1, 0, 0] and out["sample_rate"] == OUTPUT_SAMPLE_RATE


def test_batch_node_mixes_down_resamples_and_joins_transcripts():
    a = audio(speech(0.5, rate=16000, channels=2), rate=16000)
    b = audio(speech(1.0, rate=24000), speech(0.5, rate=24000, seed=3), rate=24000)
    batch, transcripts = NODE_CLASS_MAPPINGS["StepAudioEditXAudioBatch"]().combine(a, "one\nclip", b, "two\nthree")
    assert batch["sample_rate"] == 24000 and batch["waveform"].shape == (3, 1, 24000)
    assert [c.waveform.shape[-1] for c in split_batch(batch)] == [12000, 24000, 12000]
    assert transcripts == "one clip\ntwo\nthree"
    assert batch_transcripts(["", " "], [1, 1]) == ""
    with pytest.raises(BatchInputError, match="transcript_2 is empty"):
        batch_transcripts(["hi", ""], [1, 1])
    with pytest.raises(EditInputError, match="2 clips but transcript_2 has 1"):
        batch_transcripts(["hi", "only one"], [1, 2])


def test_edit_requests_take_the_value_of_their_edit_type_and_one_line_per_clip():
    clips = split_batch(audio(speech(1.0), speech(0.6, seed=1)))
    reqs = build_edit_requests(clips, "first\n\nsecond", "speed", "more_faster", "", 2, [7, 8])
    assert [(r.audio_text, r.edit_value, r.seed, r.n_iterations) for r in reqs] == [
        ("first", "more faster", 7, 2), ("second", "more faster", 8, 2)]
    assert reqs[1].audio.shape == (1, 9600) and reqs[1].sample_rate == 16000
    denoise = build_edit_requests(clips, "", "denoise", None, "", 1, [0, 1])
    assert [r.audio_text for r in denoise] == [None, None] and denoise[0].edit_value is None
    untyped = build_edit_requests(clips, " ", "emotion", "happy", "", 1, [0, 1])
    assert [r.audio_text for r in untyped] == [None, None]  # the engine recognises them
    para = build_edit_requests(clips[:1], "ha ha", "paralinguistic", None, "ha [laughter] ha", 1, [0])
    assert para[0].new_text == "ha [laughter] ha"
    with pytest.raises(EditInputError, match="2 clips but transcript has 1"):
        build_edit_requests(clips, "only one line", "emotion", "sad", "", 1, [0, 1])
    assert per_clip_lines(" a\nb ", 1, "t") == ["a\nb"]


def test_handle_seeds_settings_and_cache():
    handle = EngineHandle(EngineConfig(), GenerationSettings(dynamic_tokens=True, max_new_tokens=100), seed=42)
    assert handle.request_seed(-1) == 42 and handle.request_seed(-1, row=2) == 44
    assert handle.request_seed(5, row=1) == 6 and handle.request_seed(SEED_MAX, row=1) == 0
    assert handle.seed_line(-1) == "seed: 42, the Engine's (this node's seed is -1)"
    assert handle.seed_line(7, rows=2) == "seed: 7, this node's own; clip i uses seed + i - 1"
    assert handle.generation_settings(False).dynamic_tokens is False
    assert handle.generation_settings(False).max_new_tokens == 100 and handle.generation_settings() is handle.settings

    evicted = []
    cache = EngineCache(capacity=2, factory=FakeEngine)
    first = cache.get(EngineConfig(dtype="bf16")).load()
    assert cache.get(EngineConfig(dtype="bf16")) is first
    cache.get(EngineConfig(dtype="fp16"))
    cache.get(EngineConfig(dtype="bf16"))  # most recently used again
    cache.get(EngineConfig(dtype="fp32"), on_evict=evicted.append)  # evicts fp16, the least recently used
    assert [e.config.dtype for e in evicted] == ["fp16"] and first.loaded
    assert [c.dtype for c, _ in cache.engines()] == ["bf16", "fp32"]


def test_progress_tracker_counts_tokens_across_calls_and_estimates_time():
    now = [0.0]
    tracker = TokenProgress(clock=lambda: now[0], min_interval=0.1)
    first = tracker.update(Progress("generate", 0, 100, call=1, calls=2))
    assert (first.value, first.total) == (0, 200) and "0/100 tokens (model call 1/2)" in first.text
    now[0] = 0.05
    assert tracker.update(Progress("generate", 5, 100, call=1, calls=2)) is None  # throttled
    now[0] = 1.0
    upd = tracker.update(Progress("generate", 50, 100, call=1, calls=2))
    assert (upd.value, upd.total) == (50, 200)
    assert "50.0 tokens/s" in upd.text and "at most 3 s left" in upd.text  # 150 tokens to the caps at 50/s
    assert tracker.update(Progress("generate", 100, 100, call=1, calls=2)).value == 100  # stage end: not throttled
    assert tracker.update(Progress("decode", 0, 1, call=1, calls=2)).total == 0
    assert tracker.update(Progress("generate", 10, 100, call=2, calls=2)).value == 110
    now[0] = 75.0
    assert tracker.finished_text() == "done: 110 tokens generated in 2 model calls, 1 min 15 s"
    assert TokenProgress(clock=lambda: 0.0).finished_text("cancelled") == "cancelled: 0 tokens generated, 0 s"


def test_edit_info_reports_tokens_stops_and_truncation():
    clips = split_batch(audio(speech(1.0), speech(0.5, seed=1)))
    passes = [PassResult(torch.zeros(24000), 30, 40, 60, StopReason.EOS),
              PassResult(torch.zeros(24000), 30, 60, 60, StopReason.CAP)]
    results = [AudioResult(torch.zeros(24000), passes=passes[:1], timings=Timings(total_s=1.0)),
               AudioResult(torch.zeros(12000), passes=passes)]
    info = edit_info("emotion -> sad", clips, results, 2, True, 0.5, 2.0)
    assert "clip 1: 1.00 s in -> 1.00 s out, 40 tokens (cap 60), stop: eos" in info
    assert "clip 2: 0.50 s in -> 0.50 s out, 40+60 tokens (cap 60, 60), stop: eos, truncated" in info
    assert "trimmed 0.50 s of trailing batch padding" in info and "model calls: 2 (each batched over 2 clips)" in info
    assert "WARNING: clip 2, iteration 2 reached its 60-token cap" in info and "dynamic_token off" in info
    results[0].warnings.append("WARNING: pass 2 of 2 could not run (audio is empty); the result is the 1 pass(es) "
                               "before it.")
    info = edit_info("emotion -> sad", clips, results, 2, True, 0.5, 2.0)
    assert "WARNING: clip 1: pass 2 of 2 could not run (audio is empty)" in info


def test_clone_info_lists_the_post_processor_warnings():
    from comfyui_step_audio_editx.nodes.info import clone_info
    from comfyui_step_audio_editx.utils.audio.edit_post_processor import LongFormResult

    reference = split_batch(audio(speech(1.0)))[0]
    result = LongFormResult(torch.zeros(48000), OUTPUT_SAMPLE_RATE, 2, 2, False,
                            passes=[PassResult(torch.zeros(24000), 30, 40, 60, StopReason.EOS)],
                            warnings=["segment 2: emotion:happy skipped (audio is empty)"])
    info = clone_info(reference, result, True, 0.1, 1.0)
    assert info.splitlines()[-1] == "WARNING: segment 2: emotion:happy skipped (audio is empty)"
