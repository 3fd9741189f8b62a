"""ComfyUI node classes (V1 API). Filled in by the nodes issue; empty mappings until then."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
