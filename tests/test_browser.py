"""The pack in ComfyUI's own frontend, in a real browser: headless Chromium driven by playwright against a
real ComfyUI server (``comfyui_harness``) with a tiny model.

Needs COMFYUI_DIR / COMFYUI_PYTHON (as the HTTP-API tests), the ``playwright`` package (the ``test`` extra)
and a Chromium binary (``/usr/bin/chromium`` from Debian's ``chromium`` package, or STEP_AUDIO_EDITX_CHROMIUM);
each missing piece skips the module and is named. Every step leaves a screenshot in
STEP_AUDIO_EDITX_SCREENSHOTS (default ``<tmp>/step_audio_editx_browser``) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from comfyui_harness import EXAMPLES_DIR, SAMPLE_WAV, require_comfyui, start_server

require_comfyui("the browser tests (which also need playwright and chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                               "(pip install -e '.[test]')")
CHROMIUM = os.environ.get("STEP_AUDIO_EDITX_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set STEP_AUDIO_EDITX_CHROMIUM)",
                allow_module_level=True)

from comfyui_step_audio_editx.nodes import NODE_CLASS_MAPPINGS  # noqa: E402

pytestmark = pytest.mark.comfyui

SCREENSHOTS = Path(os.environ.get("STEP_AUDIO_EDITX_SCREENSHOTS",
                                  Path(tempfile.gettempdir()) / "step_audio_editx_browser"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1920, "height": 1080}
APP_READY_TIMEOUT_MS = 90_000
RUN_TIMEOUT_MS = 600_000
CANCEL_AFTER_TOKENS = 20  # let the generation get going before pressing Cancel
CANCEL_DEADLINE_S = 5.0  # from the click to the server reporting the run interrupted
LONG_MAX_NEW_TOKENS = 3000  # random weights rarely emit the end token; fits the tiny model's context
UI_EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.glob("*.json"))
FRONTEND_STARTUP_ERROR = "Cannot read properties of undefined (reading 'id')"
TOKENS_TEXT = re.compile(r"^(\d+)/(\d+) tokens")
SEARCH_OPEN_TRIES = 3
SEARCH_OPEN_TIMEOUT_MS = 10_000

# Page-side helpers: the progress texts the server sent, and where a widget sits on the screen.
PAGE_HELPERS = """
() => {
  const api = window.comfyAPI.api.api;
  window.__sae = {texts: []};
  api.addEventListener("progress_text", (e) => window.__sae.texts.push(e.detail));
  window.__sae.widgetPoint = (nodeId, name) => {
    const node = app.graph.getNodeById(nodeId);
    const widget = node.widgets.find((w) => w.name === name);
    const y = node.pos[1] + (widget.last_y ?? widget.y) + LiteGraph.NODE_WIDGET_HEIGHT / 2;
    const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, y]);
    const rect = app.canvas.canvas.getBoundingClientRect();
    return [rect.left + cx, rect.top + cy];
  };
  window.__sae.widget = (nodeId, name) => app.graph.getNodeById(nodeId).widgets.find((w) => w.name === name);
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("comfyui_browser"))
    # No first-start template dialog popping up over a test (it is opened on purpose where a test needs it).
    assert srv.request("POST", "/settings/Comfy.TutorialCompleted", True)[0] == 200
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """One browser tab on the ComfyUI frontend, recording page errors from the moment the app is ready."""

    def __init__(self, page, server, test_name: str):
        self.page, self.server, self.errors = page, server, []
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.shots = 0

    def shot(self, step: str) -> Path:
        self.shots += 1
        path = SCREENSHOTS / f"{self.prefix}_{self.shots:02d}_{step}.png"
        self.page.screenshot(path=str(path))
        return path

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def load(self, workflow: dict) -> None:
        self.js("async (wf) => { await app.loadGraphData(wf); app.canvas.setDirty(true, true); }", workflow)
        self.page.wait_for_timeout(500)  # let the DOM widgets settle before screenshots

    def click_widget(self, node_id: int, name: str) -> None:
        x, y = self.js("([id, name]) => window.__sae.widgetPoint(id, name)", [node_id, name])
        self.page.mouse.click(x, y)
        self.page.wait_for_timeout(200)

    def texts_of(self, node_id: int) -> list[str]:
        return self.js("(id) => window.__sae.texts.filter((t) => t.nodeId === String(id)).map((t) => t.text)", node_id)

    def open_node_search(self):
        """Double-click the empty canvas as a user does to open the node search box; its input.

        On a loaded machine the frontend's first-start dialog can open after the fixture's Escape, or the
        canvas can take the two clicks as two single clicks: close any dialog and double-click again."""
        canvas = self.page.locator("canvas#graph-canvas")
        search = self.page.get_by_role("combobox").or_(self.page.locator(".comfy-vue-node-search-container input"))
        for _ in range(SEARCH_OPEN_TRIES):
            if self.page.locator(".p-dialog-mask").count():
                self.page.keyboard.press("Escape")
            box = canvas.bounding_box()
            self.page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            try:
                search.first.wait_for(state="visible", timeout=SEARCH_OPEN_TIMEOUT_MS)
                return search.first
            except sync_api.TimeoutError:
                continue
        raise AssertionError(f"the node search box did not open after {SEARCH_OPEN_TRIES} double-clicks")

    def run(self) -> str:
        """Press Run; the id of the prompt it queued."""
        with self.page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as resp:
            self.page.get_by_role("button", name="Run", exact=True).first.click()
        body = resp.value.json()
        assert "prompt_id" in body, body
        return body["prompt_id"]


@pytest.fixture
def ui(browser, server, request):
    page = browser.new_page(viewport=VIEWPORT)
    wrapper = Page(page, server, request.node.name)
    page.on("pageerror", lambda e: wrapper.errors.append(f"{e}\n{e.stack}"))
    page.goto(server.url)
    page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph && window.comfyAPI",
                           timeout=APP_READY_TIMEOUT_MS)
    page.wait_for_timeout(1000)
    page.keyboard.press("Escape")  # a first-start template dialog may cover the canvas
    # Frontend 1.27.10 throws one error while it registers its settings, with or without this pack: only that one
    # is allowed before the test starts.
    unexpected = [e for e in wrapper.errors if not (FRONTEND_STARTUP_ERROR in e and "addSetting" in e)]
    assert unexpected == [], "page errors while the frontend started:\n" + "\n".join(unexpected)
    wrapper.errors.clear()
    wrapper.js(PAGE_HELPERS)
    wrapper.js("() => app.graph.clear()")
    try:
        yield wrapper
    finally:
        wrapper.shot("end")  # the page as the test left it (after a failure too)
        page.close()
    assert wrapper.errors == [], "page errors:\n" + "\n".join(wrapper.errors)


# --- every node, added from scratch ----------------------------------------------------------------------------
@pytest.mark.parametrize("node_type", sorted(NODE_CLASS_MAPPINGS))
def test_each_node_is_added_from_the_library(ui, node_type):
    node_id = ui.js("""(type) => {
      const node = LiteGraph.createNode(type);   // what the node library and search box do
      if (!node) return null;
      node.pos = [200, 150];
      app.graph.add(node);
      app.canvas.setDirty(true, true);
      return node.id;
    }""", node_type)
    assert node_id is not None, f"LiteGraph.createNode({node_type!r}) returned null: the frontend failed to build it"
    ui.page.wait_for_timeout(300)
    info = ui.js("""(id) => {
      const node = app.graph.getNodeById(id);
      return {widgets: node.widgets.map((w) => [w.name, w.value ?? null, w.label ?? null, !!w.disabled]),
              has_errors: !!node.has_errors, title: node.title,
              audio: [...document.querySelectorAll("audio")].map((a) => a.src)};
    }""", node_id)
    ui.shot("added")
    names = [w[0] for w in info["widgets"]]
    assert not info["has_errors"] and "UNKNOWN" not in names, info
    widgets = {w[0]: w for w in info["widgets"]}
    if node_type == "StepAudioEditXLoadAudioWithTranscript":
        assert names == ["audio", "audioUI", "upload"]  # the file combo, core's player, core's upload button
        assert widgets["audio"][1] == SAMPLE_WAV
        assert any(f"filename={SAMPLE_WAV}" in src for src in info["audio"]), info["audio"]
    if node_type in ("StepAudioEditXAudioEditor", "StepAudioEditXClone"):
        assert widgets["seed"][1] == -1 and "Engine" in widgets["seed"][2]  # follows the Engine's seed
        assert widgets["control_after_generate"][1] == "fixed"
    if node_type == "StepAudioEditXEngine":
        assert widgets["control_after_generate"][1] == "randomize"  # the one seed that varies by default
        assert widgets["max_new_tokens"][3] and "unused" in widgets["max_new_tokens"][2]  # dynamic_token is on


# --- the example workflows -------------------------------------------------------------------------------------
def _open_example(ui: Page, name: str) -> dict:
    workflow = json.loads((EXAMPLES_DIR / name).read_text(encoding="utf-8"))
    ui.load(workflow)
    return workflow


def _declared(ui: Page, class_type: str) -> set[str]:
    spec = ui.server.get(f"/object_info/{class_type}")[class_type]["input"]
    return set(spec.get("required", {})) | set(spec.get("optional", {}))


def _check_opened_clean(ui: Page, workflow: dict, api: dict) -> None:
    state = ui.js("""async () => {
      const saved = app.graph.serialize();
      const prompt = (await app.graphToPrompt()).output;
      const nodes = app.graph.nodes.map((n) => ({
        id: n.id, type: n.type, title: n.title, has_errors: !!n.has_errors, mode: n.mode,
        widgets: (n.widgets ?? []).map((w) => w.name),
        box: n.getBounding ? Array.from(n.getBounding()) : [n.pos[0], n.pos[1], n.size[0], n.size[1]],
        size: Array.from(n.size), min: Array.from(n.computeSize()),
      }));
      return {saved, prompt, nodes};
    }""")
    by_id = {n["id"]: n for n in workflow["nodes"]}
    assert len(state["nodes"]) == len(by_id)
    for node in state["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        assert not node["has_errors"] and "UNKNOWN" not in node["widgets"], f"{where} is broken: {node}"
        assert node["title"] == by_id[node["id"]]["title"] and node["title"].strip(), where
        assert node["size"][0] >= node["min"][0] - 1 and node["size"][1] >= node["min"][1] - 1, \
            f"{where} is smaller than its widgets need: {node['size']} < {node['min']}"
    boxes = [(n["id"], n["box"]) for n in state["nodes"]]
    for i, (a, (ax, ay, aw, ah)) in enumerate(boxes):
        for b, (bx, by, bw, bh) in boxes[i + 1:]:
            assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, f"nodes {a} and {b} overlap"
    # What the frontend would save and queue is what the files hold: the generator matches this frontend.
    saved = {n["id"]: n for n in state["saved"]["nodes"]}
    for node_id, node in by_id.items():
        assert saved[node_id]["widgets_values"] == node["widgets_values"], f"node {node_id} widgets_values"
    assert sorted(map(tuple, state["saved"]["links"])) == sorted(map(tuple, workflow["links"]))
    # Frontend 1.27 also queues its own display widgets (audioUI, preview); the server drops undeclared inputs.
    queued = {k: {"class_type": v["class_type"],
                  "inputs": {n: x for n, x in v["inputs"].items() if n in _declared(ui, v["class_type"])}}
              for k, v in state["prompt"].items()}
    assert queued == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def _node_of(workflow: dict, node_type: str) -> int:
    return next(n["id"] for n in workflow["nodes"] if n["type"] == node_type)


@pytest.mark.parametrize("name", UI_EXAMPLES)
def test_example_opens_clean_and_runs_from_the_run_button(ui, name):
    workflow = _open_example(ui, name)
    api = json.loads((EXAMPLES_DIR / "api" / name.replace(".json", "_api.json")).read_text(encoding="utf-8"))
    ui.shot("opened")
    _check_opened_clean(ui, workflow, api)
    worker = next(n["id"] for n in workflow["nodes"]
                  if n["type"] in ("StepAudioEditXAudioEditor", "StepAudioEditXClone"))
    prefix = next(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "SaveAudio").split("/")[-1]

    prompt_id = ui.run()
    ui.page.wait_for_function("(id) => window.__sae.texts.some((t) => t.nodeId === String(id))", arg=worker,
                              timeout=RUN_TIMEOUT_MS)
    ui.shot("running")
    ui.page.wait_for_function("(prefix) => [...document.querySelectorAll('audio')].some((a) => a.src.includes("
                              "'filename=' + prefix))", arg=prefix, timeout=RUN_TIMEOUT_MS)
    entry = ui.server.wait(prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    ui.page.wait_for_timeout(500)
    ui.shot("finished")

    texts = ui.texts_of(worker)
    assert any(TOKENS_TEXT.match(t) for t in texts), texts  # per-token progress on the node
    assert texts[-1].startswith("done: "), texts  # and how it ended, not a stale token count
    shown = ui.js("(id) => window.__sae.widget(id, '$$node-text-preview')?.value ?? null", worker)
    assert shown == texts[-1]
    info = ui.js("() => [...document.querySelectorAll('textarea')].map((t) => t.value)")
    assert any("model calls" in t and "time:" in t for t in info), info  # the info output in Preview Any
    assert any("seed: 0, the Engine's" in t for t in info), info  # and which seed decided


# --- upload, cancel, dynamic_token ------------------------------------------------------------------------------
def test_upload_through_the_loader(ui, tmp_path):
    clip = tmp_path / "uploaded_voice.wav"
    shutil.copy(EXAMPLES_DIR / SAMPLE_WAV, clip)
    node_id = ui.js("""() => {
      const node = LiteGraph.createNode("StepAudioEditXLoadAudioWithTranscript");
      node.pos = [300, 200];
      app.graph.add(node);
      app.canvas.setDirty(true, true);
      return node.id;
    }""")
    ui.page.wait_for_timeout(300)
    ui.shot("loader")
    with ui.page.expect_file_chooser() as chooser:
        ui.click_widget(node_id, "upload")
    chooser.value.set_files(str(clip))
    ui.page.wait_for_function("(id) => window.__sae.widget(id, 'audio').value === 'uploaded_voice.wav'",
                              arg=node_id, timeout=30_000)
    ui.page.wait_for_function("() => [...document.querySelectorAll('audio')].some((a) => "
                              "a.src.includes('filename=uploaded_voice.wav'))", timeout=30_000)
    ui.js("() => app.canvas.setDirty(true, true)")
    ui.page.wait_for_timeout(300)
    ui.shot("uploaded")
    uploaded = ui.server.base / "input" / "uploaded_voice.wav"
    assert uploaded.read_bytes() == clip.read_bytes()
    # No transcript beside the upload: a denoise edit needs none, and the loader gives an empty one.
    prompt = {"1": {"class_type": "StepAudioEditXLoadAudioWithTranscript", "inputs": {"audio": "uploaded_voice.wav"}},
              "2": {"class_type": "StepAudioEditXAudioEditor", "inputs": {
                  "audio": ["1", 0], "transcript": ["1", 1], "edit_type": "denoise", "emotion": "happy",
                  "style": "whisper", "speed": "faster", "paralinguistic_text": "", "n_edit_iterations": 1,
                  "dynamic_token": True, "seed": -1}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    entry = ui.server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["3"]["text"] == [""]


def test_cancel_stops_a_running_edit(ui):
    workflow = _open_example(ui, "step_audio_editx_edit_emotion.json")
    engine, editor = _node_of(workflow, "StepAudioEditXEngine"), _node_of(workflow, "StepAudioEditXAudioEditor")
    ui.js("""([engine, editor, cap, seed]) => {
      const w = window.__sae.widget;
      w(engine, "dynamic_token").value = false;
      w(engine, "max_new_tokens").value = cap;
      w(editor, "dynamic_token").value = false;
      w(editor, "n_edit_iterations").value = 5;
      w(editor, "seed").value = seed;   // a fresh seed: nothing cached from other tests
    }""", [engine, editor, LONG_MAX_NEW_TOKENS, int(time.time()) % 100000])
    prompt_id = ui.run()
    ui.page.wait_for_function("""([id, n]) => window.__sae.texts.some((t) => t.nodeId === String(id)
                                 && parseInt(t.text) >= n)""", arg=[editor, CANCEL_AFTER_TOKENS],
                              timeout=RUN_TIMEOUT_MS)
    ui.shot("running")
    pressed = time.monotonic()
    ui.page.get_by_role("button", name="Cancel current run").click()
    while not ui.server.history(prompt_id):
        assert time.monotonic() - pressed < CANCEL_DEADLINE_S, "Cancel did not stop the edit"
        time.sleep(0.05)
    took = time.monotonic() - pressed
    entry = ui.server.history(prompt_id)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    assert took < CANCEL_DEADLINE_S, f"Cancel took {took:.2f} s"
    ui.page.wait_for_function("(id) => window.__sae.texts.filter((t) => t.nodeId === String(id)).at(-1)?.text"
                              ".startsWith('cancelled')", arg=editor, timeout=10_000)
    ui.page.wait_for_timeout(300)
    ui.shot("cancelled")
    last = TOKENS_TEXT.match(ui.texts_of(editor)[-2])
    assert last and int(last.group(1)) < LONG_MAX_NEW_TOKENS  # it stopped mid-generation


def test_dynamic_token_governs_max_new_tokens(ui):
    workflow = _open_example(ui, "step_audio_editx_edit_emotion.json")
    engine, editor = _node_of(workflow, "StepAudioEditXEngine"), _node_of(workflow, "StepAudioEditXAudioEditor")

    def cap() -> tuple[bool, str | None]:
        return tuple(ui.js("(id) => { const w = window.__sae.widget(id, 'max_new_tokens');"
                           " return [!!w.disabled, w.label ?? null]; }", engine))

    def toggle(node_id: int) -> bool:
        ui.click_widget(node_id, "dynamic_token")  # a real click on the canvas toggle
        return ui.js("(id) => window.__sae.widget(id, 'dynamic_token').value", node_id)

    disabled, label = cap()
    assert disabled and "unused" in label  # both toggles on: the Engine's cap applies nowhere
    ui.shot("both_dynamic")
    assert toggle(editor) is False
    assert cap() == (False, "max_new_tokens")  # the Editor now stops at the Engine's max_new_tokens
    ui.shot("editor_fixed_cap")
    assert toggle(editor) is True
    assert cap()[0]
    assert toggle(engine) is False
    assert cap()[0]  # the Editor's own toggle decides for edits, so the Engine's toggle alone changes nothing
    ui.js("(id) => app.graph.getNodeById(id).disconnectOutput(0)", engine)
    ui.page.wait_for_timeout(200)
    assert cap() == (False, "max_new_tokens")  # on its own, the Engine's toggle governs its cap
    ui.shot("engine_alone")


def test_loader_is_added_through_the_node_search_box(ui):
    search = ui.open_node_search()
    search.fill("Load Audio + Transcript")
    ui.page.wait_for_timeout(500)
    ui.shot("search")
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_timeout(500)
    ui.shot("added")
    added = ui.js("() => app.graph.nodes.map((n) => [n.type, n.widgets.map((w) => w.name)])")
    assert added == [["StepAudioEditXLoadAudioWithTranscript", ["audio", "audioUI", "upload"]]]


def test_loader_player_fits_other_frontend_orders(ui):
    """The player input lands before the upload button whichever extension runs first, and never twice."""
    orders = ui.js("""async () => {
      const ext = app.extensions.find((e) => e.name === "StepAudioEditX.LoaderAudioPlayer");
      const combo = [["a.wav"], {audio_upload: true}];
      const run = async (required, optional) => {
        const nodeData = {name: "StepAudioEditXLoadAudioWithTranscript", input: {required, optional}};
        await ext.beforeRegisterNodeDef(null, nodeData);
        return [Object.keys(nodeData.input.required), Object.keys(nodeData.input.optional ?? {})];
      };
      return {
        core_first: await run({audio: combo, upload: ["AUDIOUPLOAD", {}]}),           // frontend 1.27
        pack_first: await run({audio: combo}),                                          // upload added later
        core_has_player: await run({audio: combo, audioUI: ["AUDIO_UI", {}], upload: ["AUDIOUPLOAD", {}]}),
        other_node: await (async () => {
          const nodeData = {name: "LoadAudio", input: {required: {audio: combo}}};
          await ext.beforeRegisterNodeDef(null, nodeData);
          return Object.keys(nodeData.input.required);
        })(),
      };
    }""")
    assert orders["core_first"] == [["audio", "audioUI", "upload"], []]
    assert orders["pack_first"] == [["audio", "audioUI"], []]
    assert orders["core_has_player"] == [["audio", "audioUI", "upload"], []]
    assert orders["other_node"] == ["audio"]


@pytest.mark.parametrize("name", UI_EXAMPLES)
def test_example_opens_from_the_templates_menu(ui, name):
    workflow = json.loads((EXAMPLES_DIR / name).read_text(encoding="utf-8"))
    thumbnails = []
    ui.page.on("response", lambda r: r.url.split("?")[0].endswith(f"/{Path(name).stem}.jpg") and thumbnails.append(r))
    ui.js("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")  # the Templates button's command
    dialog = ui.page.get_by_role("dialog")
    dialog.get_by_text("ComfyUI-Step-Audio-EditX", exact=True).first.click()
    card = dialog.get_by_text(Path(name).stem, exact=True).first
    card.wait_for(timeout=30_000)
    ui.page.wait_for_function("() => [...document.querySelectorAll('[role=dialog] img')].some((i) => i.naturalWidth)",
                              timeout=30_000)
    # the dialog fetches every card's picture (shown as blob: URLs): wait for this card's own fetch, which may
    # land after another card's picture is already on screen
    for _ in range(300):
        if thumbnails:
            break
        ui.page.wait_for_timeout(100)
    assert [r.status for r in thumbnails] == [200]  # the shipped .jpg is the card's picture
    ui.shot("templates")
    card.click()
    ui.page.wait_for_function("(n) => app.graph.nodes.length === n", arg=len(workflow["nodes"]), timeout=30_000)
    ui.page.wait_for_timeout(500)
    ui.shot("opened")
    titles = ui.js("() => app.graph.nodes.map((n) => [n.id, n.title, !!n.has_errors])")
    assert sorted(titles) == sorted([n["id"], n["title"], False] for n in workflow["nodes"])
