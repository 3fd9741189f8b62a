"""The shipped example workflows (``example_workflows/<name>.json`` and ``api/<name>_api.json``)."""

from __future__ import annotations

from .builder import NodeSpec, WorkflowSpec

SAMPLE_CLIP = "sample_speech.wav"  # with sample_speech.txt beside it; both ship in example_workflows/
MODEL = "Step-Audio-EditX"  # the folder under models/TTS

# Sizes (width, height) at least what the frontend computes for each node, so that every widget shows.
LOADER_SIZE = (360, 170)
ENGINE_SIZE = (380, 290)
EDITOR_SIZE = (420, 400)
CLONE_SIZE = (440, 300)
BATCH_SIZE = (380, 240)
SAVE_SIZE = (360, 150)
INFO_SIZE = (420, 250)
NOTE_SIZE = (380, 250)

SETUP_NOTE = (
    "**Set-up:** copy `sample_speech.wav` and `sample_speech.txt` from this pack's `example_workflows/` into "
    "ComfyUI's `input/` folder, and the model folders `Step-Audio-EditX/` + `Step-Audio-Tokenizer/` into "
    "`models/TTS/`.\n\n"
    "**Seed:** the Engine's seed decides the output of every node whose own seed is -1 (the default). Set a "
    "number on a node to pin it."
)


def _engine(node_id: int, column: int) -> NodeSpec:
    # A new take on every run; nodes at -1 follow this seed.
    return NodeSpec(node_id, "StepAudioEditXEngine", column, ENGINE_SIZE, values={"model": MODEL},
                    control="randomize")


def _outputs(first_id: int, source: int, column: int, prefix: str) -> tuple[NodeSpec, NodeSpec]:
    return (NodeSpec(first_id, "SaveAudio", column, SAVE_SIZE, title="Save the result",
                     values={"filename_prefix": f"audio/{prefix}"}, links={"audio": (source, 0)}),
            NodeSpec(first_id + 1, "PreviewAny", column, INFO_SIZE, title="Info (tokens, time, warnings)",
                     links={"source": (source, 1)}))


def _note(node_id: int, column: int, heading: str, body: str) -> NodeSpec:
    return NodeSpec(node_id, "MarkdownNote", column, NOTE_SIZE, title="Read me",
                    values={"text": f"### {heading}\n\n{body}\n\n{SETUP_NOTE}"})


EDIT_EMOTION = WorkflowSpec("step_audio_editx_edit_emotion", (
    NodeSpec(1, "StepAudioEditXLoadAudioWithTranscript", 0, LOADER_SIZE, title="Input clip + transcript",
             values={"audio": SAMPLE_CLIP}),
    _engine(2, 0),
    NodeSpec(3, "StepAudioEditXAudioEditor", 1, EDITOR_SIZE, title="Make it happy",
             values={"edit_type": "emotion", "emotion": "happy"},
             links={"audio": (1, 0), "transcript": (1, 1), "engine": (2, 0)}),
    *_outputs(4, 3, 2, "step_audio_editx_happy"),
    _note(6, 1, "Emotion edit", "The loader reads the transcript from the `.txt` beside the clip. Raise "
          "`n_edit_iterations` for a stronger effect (each iteration is one more full model pass)."),
))

CLONE_INLINE_TAGS = WorkflowSpec("step_audio_editx_clone_inline_tags", (
    NodeSpec(1, "StepAudioEditXLoadAudioWithTranscript", 0, LOADER_SIZE, title="Reference voice",
             values={"audio": SAMPLE_CLIP}),
    _engine(2, 0),
    NodeSpec(3, "StepAudioEditXClone", 1, CLONE_SIZE, title="Speak the text in that voice",
             values={"text": "Hello everyone, and thank you for coming. <laugh> I honestly did not expect so many "
                             "of you! [pause:500ms] <emotion:happy> Tonight we celebrate a wonderful year together."},
             links={"reference_audio": (1, 0), "reference_text": (1, 1), "engine": (2, 0)}),
    *_outputs(4, 3, 2, "step_audio_editx_clone"),
    _note(6, 1, "Clone with inline tags", "The text is spoken in the reference voice. `<laugh>` inserts a "
          "laugh, `<emotion:happy>` makes the following sentence happy, `[pause:500ms]` adds silence. Every edit "
          "tag is one more model pass over its chunk; long texts are split into chunks automatically."),
))

BATCH_EDIT = WorkflowSpec("step_audio_editx_batch_edit", (
    NodeSpec(1, "StepAudioEditXLoadAudioWithTranscript", 0, LOADER_SIZE, title="Clip 1",
             values={"audio": SAMPLE_CLIP}),
    NodeSpec(2, "StepAudioEditXLoadAudioWithTranscript", 0, LOADER_SIZE, title="Clip 2",
             values={"audio": SAMPLE_CLIP}),
    NodeSpec(3, "StepAudioEditXAudioBatch", 1, BATCH_SIZE, title="Batch the two clips",
             links={"audio_1": (1, 0), "transcript_1": (1, 1), "audio_2": (2, 0), "transcript_2": (2, 1)}),
    _engine(4, 1),
    NodeSpec(5, "StepAudioEditXAudioEditor", 2, EDITOR_SIZE, title="Whisper both",
             values={"edit_type": "style", "style": "whisper"},
             links={"audio": (3, 0), "transcript": (3, 1), "engine": (4, 0)}),
    *_outputs(6, 5, 3, "step_audio_editx_batch"),
    _note(8, 0, "Batch edit", "The Audio Batch node joins clips (chain it for more) and their transcripts, one "
          "line per clip. The editor runs one batched model call per iteration for the whole batch; clip i uses "
          "seed + i. Both loaders read the sample clip here: point the second one at your own clip (with its "
          "`.txt`). Save writes one file per clip."),
))

EXAMPLES: tuple[WorkflowSpec, ...] = (EDIT_EMOTION, CLONE_INLINE_TAGS, BATCH_EDIT)
