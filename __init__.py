"""ComfyUI entry point of the Step-Audio-EditX node pack.

ComfyUI imports this folder as a package and reads the two mappings below. They load on first access,
so importing the package for the engine library alone (scripts, the CLI, tests) does not build the node
classes. Everything else lives in ``engines/`` (the model library, importable without ComfyUI) and
``nodes/`` (thin node classes); ``web/`` holds the few frontend extensions the nodes need. Importing the
package registers ``model_type "step1"`` with transformers (now if transformers is loaded, else right after
it is; see engines/step1_registration.py).
"""

from .engines.step1_registration import ensure_step1_registration

WEB_DIRECTORY = "./web"  # the frontend extensions (audio player of the loader, token-cap and seed hints)
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]


def __getattr__(name: str):
    if name in __all__:
        from . import nodes

        return getattr(nodes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# AutoModelForCausalLM loads Step1 folders without remote code once this package is imported.
ensure_step1_registration()
