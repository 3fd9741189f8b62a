"""ComfyUI entry point of the Step-Audio-EditX node pack.

ComfyUI imports this folder as a package and reads the two mappings below. Everything else lives in
``engines/`` (the model library, importable without ComfyUI) and ``nodes/`` (thin node classes).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
