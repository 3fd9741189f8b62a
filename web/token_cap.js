// dynamic_token visibly governs max_new_tokens: the Engine's max_new_tokens is greyed out (and says why)
// whenever no node that uses this Engine takes its cap from it.
//
// Who uses the fixed cap: an Audio Editor whose own dynamic_token is off; a Clone (or an unconnected Engine)
// when the Engine's dynamic_token is off. A toggle turned into an input socket counts as "may be off".
import { app } from "../../scripts/app.js";
import { CLONE, EDITOR, ENGINE, comfyClass, findWidget } from "./common.js";

const TOGGLE = "dynamic_token";
const CAP = "max_new_tokens";
const UNUSED_LABEL = `${CAP} (unused: ${TOGGLE} on)`;
const ORIGINAL_LABEL = Symbol("label before this extension changed it");

function toggleIsOn(node) {
  const input = node.inputs?.find((i) => i.name === TOGGLE || i.widget?.name === TOGGLE);
  if (input?.link != null) return false; // driven by a link: cannot tell, keep the cap usable
  const widget = findWidget(node, TOGGLE);
  return widget ? widget.value !== false : true;
}

function engineUsers(engine) {
  const graph = engine.graph ?? app.graph;
  const users = [];
  for (const output of engine.outputs ?? []) {
    for (const linkId of output.links ?? []) {
      const link = graph?.links?.get?.(linkId) ?? graph?.links?.[linkId];
      const target = link && graph.getNodeById(link.target_id);
      if (target) users.push(target);
    }
  }
  return users;
}

export function capApplies(engine) {
  const engineDynamic = toggleIsOn(engine);
  const users = engineUsers(engine);
  if (!users.length) return !engineDynamic;
  return users.some((user) => (comfyClass(user) === EDITOR ? !toggleIsOn(user) : !engineDynamic));
}

function refreshEngine(engine) {
  const cap = findWidget(engine, CAP);
  if (!cap) return;
  const applies = capApplies(engine);
  if (cap.disabled === !applies) return;
  if (!(ORIGINAL_LABEL in cap)) cap[ORIGINAL_LABEL] = cap.label; // the frontend's (maybe translated) label
  cap.disabled = !applies;
  cap.label = applies ? cap[ORIGINAL_LABEL] : UNUSED_LABEL;
  engine.setDirtyCanvas?.(true, true);
}

function refreshAll() {
  for (const node of app.graph?.nodes ?? []) {
    if (comfyClass(node) === ENGINE) refreshEngine(node);
  }
}

function chain(object, method, after) {
  const original = object[method];
  object[method] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

app.registerExtension({
  name: "StepAudioEditX.TokenCap",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (![ENGINE, EDITOR, CLONE].includes(nodeData?.name)) return;
    chain(nodeType.prototype, "onConnectionsChange", () => queueMicrotask(refreshAll));
    chain(nodeType.prototype, "onConfigure", () => queueMicrotask(refreshAll));
    chain(nodeType.prototype, "onRemoved", () => queueMicrotask(refreshAll));
    // Also on every redraw of an Engine: values set by code (undo, other extensions) fire no callback.
    if (nodeData.name === ENGINE) chain(nodeType.prototype, "onDrawForeground", function () { refreshEngine(this); });
  },
  nodeCreated(node) {
    if (![ENGINE, EDITOR].includes(comfyClass(node))) return;
    const toggle = findWidget(node, TOGGLE);
    if (toggle) chain(toggle, "callback", () => refreshAll());
    queueMicrotask(refreshAll);
  },
  afterConfigureGraph() {
    refreshAll();
  },
});
