// Names shared by this pack's frontend extensions (ComfyUI loads every .js here; this one registers nothing).
export const ENGINE = "StepAudioEditXEngine";
export const EDITOR = "StepAudioEditXAudioEditor";
export const CLONE = "StepAudioEditXClone";
export const LOADER = "StepAudioEditXLoadAudioWithTranscript";

export function findWidget(node, name) {
  return node?.widgets?.find((w) => w.name === name);
}

export function comfyClass(node) {
  return node?.comfyClass ?? node?.constructor?.comfyClass ?? node?.type;
}
