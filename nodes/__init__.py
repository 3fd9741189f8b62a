"""ComfyUI node classes (V1 API): thin wrappers that convert at the boundary and call the engine.

Class names are stored in saved workflows: never rename them. Importing this package needs no ComfyUI;
inside ComfyUI it registers models/TTS and the status route.
"""

from . import comfy_bridge
from .audio_batch_node import StepAudioEditXAudioBatch
from .audio_editor_node import StepAudioEditXAudioEditor
from .clone_node import StepAudioEditXClone
from .engine_node import StepAudioEditXEngine
from .load_audio_node import StepAudioEditXLoadAudioWithTranscript

NODE_CLASS_MAPPINGS: dict = {
    "StepAudioEditXEngine": StepAudioEditXEngine,
    "StepAudioEditXAudioEditor": StepAudioEditXAudioEditor,
    "StepAudioEditXClone": StepAudioEditXClone,
    "StepAudioEditXLoadAudioWithTranscript": StepAudioEditXLoadAudioWithTranscript,
    "StepAudioEditXAudioBatch": StepAudioEditXAudioBatch,
}
NODE_DISPLAY_NAME_MAPPINGS: dict = {
    "StepAudioEditXEngine": "Step Audio EditX Engine",
    "StepAudioEditXAudioEditor": "Step Audio EditX Audio Editor",
    "StepAudioEditXClone": "Step Audio EditX Clone (TTS)",
    "StepAudioEditXLoadAudioWithTranscript": "Step Audio EditX Load Audio + Transcript",
    "StepAudioEditXAudioBatch": "Step Audio EditX Audio Batch",
}

comfy_bridge.on_pack_import()
