"""The example workflows as data: one spec per example (``examples.py``), written in ComfyUI's UI format and
API format by ``builder.py``, so the two files of an example cannot drift apart.

Regenerate after changing a node's inputs or an example: ``python -m comfyui_step_audio_editx.utils.workflows``
(``--check`` only compares; CI runs the same comparison in ``tests/test_example_workflows.py``).
``example_workflows/<name>.jpg`` are the Templates menu's pictures: the "finished" screenshots that
``tests/test_browser.py`` takes of each example, cropped to the graph.
"""

from .builder import NodeSpec, WorkflowSpec, api_workflow, ui_workflow
from .examples import EXAMPLES

__all__ = ["EXAMPLES", "NodeSpec", "WorkflowSpec", "api_workflow", "ui_workflow"]
