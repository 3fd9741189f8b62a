"""The shipped example workflows are exactly what the spec in ``utils/workflows`` generates (both formats), and
the generator lays widgets out from the nodes' INPUT_TYPES."""

from __future__ import annotations

import json

import pytest
from comfyui_step_audio_editx.utils.workflows import EXAMPLES, NodeSpec, WorkflowSpec, api_workflow, ui_workflow
from comfyui_step_audio_editx.utils.workflows.__main__ import EXAMPLES_DIR, main, rendered
from comfyui_step_audio_editx.utils.workflows.builder import TITLE_HEIGHT, widget_values

REGENERATE = "python -m comfyui_step_audio_editx.utils.workflows"


def test_committed_examples_equal_the_generator_output():
    files = rendered()
    assert len(files) == 2 * len(EXAMPLES)
    for path, text in files.items():
        assert path.is_file(), f"{path.name} is missing: run {REGENERATE}"
        assert path.read_text(encoding="utf-8") == text, f"{path.name} differs from its spec: run {REGENERATE}"
    shipped = {p for p in EXAMPLES_DIR.rglob("*.json")}
    assert shipped == set(files), f"example files without a spec: {sorted(map(str, shipped - set(files)))}"
    assert main(["--check"]) == 0


def test_widget_values_follow_input_types_and_the_frontends_extra_widgets():
    editor = NodeSpec(1, "StepAudioEditXAudioEditor", 0, (400, 400), values={"edit_type": "speed", "speed": "slower"})
    assert widget_values(editor) == ["", "speed", "happy", "whisper", "slower", "", 1, True, -1, "fixed"]
    loader = NodeSpec(2, "StepAudioEditXLoadAudioWithTranscript", 0, (300, 150), values={"audio": "a.wav"})
    assert widget_values(loader) == ["a.wav", None, None]  # + the frontend's player (not saved) and upload button
    engine = NodeSpec(3, "StepAudioEditXEngine", 0, (300, 300), values={"model": "m"}, control="randomize")
    assert widget_values(engine)[8:10] == [0, "randomize"]  # the 9th widget, seed, with its control right after it
    with pytest.raises(ValueError, match="no inputs"):
        widget_values(NodeSpec(4, "StepAudioEditXClone", 0, (1, 1), values={"sed": 3}))


def test_an_appended_widget_flows_into_both_formats(monkeypatch):
    from comfyui_step_audio_editx.nodes.clone_node import StepAudioEditXClone

    original = StepAudioEditXClone.INPUT_TYPES.__func__

    def with_new_widget(cls):
        spec = original(cls)
        spec["optional"]["new_knob"] = ("FLOAT", {"default": 0.25})
        return spec

    monkeypatch.setattr(StepAudioEditXClone, "INPUT_TYPES", classmethod(with_new_widget))
    spec = WorkflowSpec("probe", (NodeSpec(1, "StepAudioEditXClone", 0, (400, 300)),))
    assert ui_workflow(spec)["nodes"][0]["widgets_values"][-3:] == [-1, "fixed", 0.25]
    assert api_workflow(spec)["1"]["inputs"]["new_knob"] == 0.25


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda s: s.name)
def test_examples_have_titles_no_overlaps_and_consistent_links(spec):
    ui = ui_workflow(spec)
    boxes = []
    for node in ui["nodes"]:
        assert node["title"].strip(), f"node {node['id']} has no title"
        x, y = node["pos"]
        w, h = node["size"]
        boxes.append((node["id"], x, y - TITLE_HEIGHT, x + w, y + h))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2], f"nodes {a[0]} and {b[0]} overlap"
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[dst]["inputs"][dst_slot]["type"] == kind  # LiteGraph types a link by its input
    api = api_workflow(spec)
    assert set(api) == {str(n["id"]) for n in ui["nodes"] if n["type"] != "MarkdownNote"}
    json.dumps(api)  # plain JSON
