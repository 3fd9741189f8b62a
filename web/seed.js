// One seed story: the Engine's seed decides the output of every Editor / Clone whose own seed is -1 (their
// default). Those nodes say so in their seed's label, and a freshly added one starts with its
// control_after_generate on "fixed", so that it keeps following the Engine instead of turning -1 into a
// random number after the first run. Saved workflows keep their stored values.
import { app } from "../../scripts/app.js";
import { CLONE, EDITOR, ENGINE, comfyClass, findWidget } from "./common.js";

const SEED = "seed";
const FOLLOW_ENGINE = -1;
const NODE_SEED_LABEL = "seed (-1: Engine's)";
const ENGINE_SEED_LABEL = "seed (for nodes at -1)";

app.registerExtension({
  name: "StepAudioEditX.Seed",
  nodeCreated(node) {
    const kind = comfyClass(node);
    if (![ENGINE, EDITOR, CLONE].includes(kind)) return;
    const seed = findWidget(node, SEED);
    if (!seed) return;
    seed.label = kind === ENGINE ? ENGINE_SEED_LABEL : NODE_SEED_LABEL;
    const control = seed.linkedWidgets?.[0];
    if (kind !== ENGINE && control && seed.value === FOLLOW_ENGINE) control.value = "fixed";
  },
});
