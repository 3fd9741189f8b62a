"""Model engines of the pack. Nothing under engines/ imports ComfyUI."""
