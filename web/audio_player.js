// The loader's audio player and upload button, built by ComfyUI's own audio widgets.
//
// The loader declares its file input like core Load Audio (`audio_upload: true`), so the frontend adds its
// upload button (AUDIOUPLOAD). That button drives an AUDIO_UI player widget named "audioUI", which the
// frontend only adds to its own audio nodes (matched by class name). Without it the button throws while the
// node is built and the node is never created. We add the same player input to the loader, placed before
// the button, unless this frontend version already gave the node one.
import { app } from "../../scripts/app.js";
import { LOADER } from "./common.js";

const PLAYER_INPUT = "audioUI";
const PLAYER_SPEC = ["AUDIO_UI", {}];
const FILE_INPUT = "audio";

app.registerExtension({
  name: "StepAudioEditX.LoaderAudioPlayer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== LOADER) return;
    const inputs = nodeData.input ?? (nodeData.input = {});
    const required = inputs.required ?? (inputs.required = {});
    if (PLAYER_INPUT in required || PLAYER_INPUT in (inputs.optional ?? {})) return;
    // Re-insert the inputs in place (widgets are built in insertion order): file, player, then the rest
    // (the upload button, when the frontend's own extension already added it).
    const entries = Object.entries(required);
    for (const [name] of entries) delete required[name];
    for (const [name, spec] of entries) {
      required[name] = spec;
      if (name === FILE_INPUT) required[PLAYER_INPUT] = PLAYER_SPEC;
    }
    if (!(PLAYER_INPUT in required)) required[PLAYER_INPUT] = PLAYER_SPEC;
  },
});
