"""Build ComfyUI's two workflow formats from one spec, taking every widget from the nodes' INPUT_TYPES.

Widget values are laid out the way the frontend saves them: one value per widget input in INPUT_TYPES
order (required, then optional), then one for the control widget a seed carries (control_after_generate),
then the widgets the frontend adds itself after an ``audio_upload`` combo: core's audio player (not saved: a
hole, written as null) and upload button (null: what a load and save of the workflow leaves there). A widget appended to a node later therefore
lands in the examples on regeneration, at the position the frontend expects. Nodes are placed in columns
from their sizes, so none overlap.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED_NAMES = ("seed", "noise_seed")  # the frontend gives INT inputs of these names a control widget
OPTIONAL_SOCKET_SHAPE = 7  # LiteGraph's hollow-circle socket of optional inputs
TITLE_HEIGHT = 30  # LiteGraph draws the title bar above a node's pos
COLUMN_GAP = 60
ROW_GAP = 40
WORKFLOW_NAMESPACE = uuid.UUID("6d5d8410-9604-5448-965c-4a4ae7600592")  # stable ids: same spec, same file
UI_FORMAT_VERSION = 0.4

# Core nodes the examples use, described as their INPUT_TYPES would be (ComfyUI is not importable here).
CORE_NODES: dict[str, dict[str, Any]] = {
    "SaveAudio": {"inputs": {"audio": ("AUDIO",), "filename_prefix": ("STRING", {"default": "audio/ComfyUI"})},
                  "outputs": ()},
    "PreviewAny": {"inputs": {"source": ("*",)}, "outputs": ()},
    "MarkdownNote": {"inputs": {"text": ("STRING", {"multiline": True})}, "outputs": (), "ui_only": True},
}


@dataclass(frozen=True)
class NodeSpec:
    """One node: widget values by input name (the rest take their defaults) and links into its inputs."""

    id: int
    type: str
    column: int
    size: tuple[int, int]
    title: Optional[str] = None  # None: the node's display name
    values: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (source node id, output slot)
    control: str = "fixed"  # control_after_generate of a seed


@dataclass(frozen=True)
class WorkflowSpec:
    name: str  # file stem
    nodes: tuple[NodeSpec, ...]


def _node_classes() -> tuple[dict, dict]:
    from ...nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    return NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS


def _inputs(node_type: str) -> dict[str, tuple]:
    classes, _ = _node_classes()
    if node_type in CORE_NODES:
        return CORE_NODES[node_type]["inputs"]
    spec = classes[node_type].INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def _outputs(node_type: str) -> list[tuple[str, str]]:
    classes, _ = _node_classes()
    if node_type in CORE_NODES:
        return list(CORE_NODES[node_type]["outputs"])
    cls = classes[node_type]
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    return list(zip(names, cls.RETURN_TYPES))


def _options(spec: tuple) -> dict:
    return spec[1] if len(spec) > 1 else {}


def is_widget(spec: tuple) -> bool:
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not _options(spec).get("forceInput")


def has_control(name: str, spec: tuple) -> bool:
    return spec[0] == "INT" and bool(_options(spec).get("control_after_generate", name in SEED_NAMES))


def _socket_type(spec: tuple) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _default(spec: tuple) -> Any:
    opts = _options(spec)
    if "default" in opts:
        return opts["default"]
    if isinstance(spec[0], list):
        return spec[0][0] if spec[0] else None
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec[0]]


def widget_values(node: NodeSpec) -> list[Any]:
    """The node's widgets_values as the frontend saves them (see the module docstring)."""
    inputs = _inputs(node.type)
    unknown = set(node.values) - set(inputs)
    if unknown:
        raise ValueError(f"{node.type} has no inputs {sorted(unknown)}")
    values: list[Any] = []
    for name, spec in inputs.items():
        if not is_widget(spec):
            continue
        values.append(node.values.get(name, _default(spec)))
        if has_control(name, spec):
            values.append(node.control)
        if _options(spec).get("audio_upload"):
            values += [None, None]  # core's audio player (not saved) and upload button (loads/saves as null)
    return values


def _display_names() -> dict[str, str]:
    return {"SaveAudio": "Save Audio (FLAC)", "PreviewAny": "Preview Any", "MarkdownNote": "Note",
            **_node_classes()[1]}


def _positions(nodes: tuple[NodeSpec, ...]) -> dict[int, list[int]]:
    columns = sorted({n.column for n in nodes})
    x, positions = 0, {}
    for column in columns:
        members = [n for n in nodes if n.column == column]
        y = 0
        for n in members:
            positions[n.id] = [x, y + TITLE_HEIGHT]
            y += TITLE_HEIGHT + n.size[1] + ROW_GAP
        x += max(n.size[0] for n in members) + COLUMN_GAP
    return positions


def ui_workflow(spec: WorkflowSpec) -> dict:
    """The workflow in the UI format (what "Save" writes and users drag in)."""
    nodes = {n.id: n for n in spec.nodes}
    links: list[list] = []
    incoming: dict[tuple[int, str], int] = {}
    outgoing: dict[tuple[int, int], list[int]] = {}
    for n in spec.nodes:
        for name, (src, slot) in n.links.items():
            link_id = len(links) + 1
            incoming[(n.id, name)] = link_id
            outgoing.setdefault((src, slot), []).append(link_id)
            links.append([link_id, src, slot, n.id, None, _socket_type(_inputs(n.type)[name])])  # as LiteGraph: the input's type
    positions = _positions(spec.nodes)
    titles = _display_names()
    ui_nodes = []
    for order, n in enumerate(spec.nodes):
        inputs = []
        for name, input_spec in _inputs(n.type).items():
            linked = (n.id, name) in incoming
            if is_widget(input_spec) and not linked:
                continue
            entry: dict[str, Any] = {"name": name, "type": _socket_type(input_spec), "link": incoming.get((n.id, name))}
            if is_widget(input_spec):
                entry["widget"] = {"name": name}
            elif name in _optional_inputs(n.type):
                entry["shape"] = OPTIONAL_SOCKET_SHAPE
            inputs.append(entry)
        sockets = [i for i in inputs if "widget" not in i] + [i for i in inputs if "widget" in i]
        for slot, entry in enumerate(sockets):  # the frontend lists sockets first, then linked widgets
            if entry["link"] is not None:
                links[entry["link"] - 1][4] = slot
        outputs = [{"name": name, "type": kind, "links": outgoing.get((n.id, slot), []), "slot_index": slot}
                   for slot, (name, kind) in enumerate(_outputs(n.type))]
        ui_nodes.append({
            "id": n.id, "type": n.type, "title": n.title or titles.get(n.type, n.type),
            "pos": positions[n.id], "size": list(n.size), "flags": {}, "order": order, "mode": 0,
            "inputs": sockets, "outputs": outputs, "properties": {"Node name for S&R": n.type},
            "widgets_values": widget_values(n),
        })
    return {
        "id": str(uuid.uuid5(WORKFLOW_NAMESPACE, spec.name)), "revision": 0,
        "last_node_id": max(nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
        "groups": [], "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [40, 40]}},
        "version": UI_FORMAT_VERSION,
    }


def _optional_inputs(node_type: str) -> set[str]:
    if node_type in CORE_NODES:
        return set()
    return set(_node_classes()[0][node_type].INPUT_TYPES().get("optional", {}))


def api_workflow(spec: WorkflowSpec) -> dict:
    """The workflow in the API format (what "Export (API)" writes and ``POST /prompt`` takes)."""
    titles = _display_names()
    prompt = {}
    for n in spec.nodes:
        if CORE_NODES.get(n.type, {}).get("ui_only"):
            continue
        inputs: dict[str, Any] = {}
        for name, input_spec in _inputs(n.type).items():
            if name in n.links:
                src, slot = n.links[name]
                inputs[name] = [str(src), slot]
            elif is_widget(input_spec):
                inputs[name] = n.values.get(name, _default(input_spec))
        prompt[str(n.id)] = {"class_type": n.type, "inputs": inputs,
                             "_meta": {"title": n.title or titles.get(n.type, n.type)}}
    return prompt
