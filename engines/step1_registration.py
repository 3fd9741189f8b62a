"""Register ``model_type "step1"`` with transformers' Auto classes as soon as both are in play.

``import comfyui_step_audio_editx`` alone must be enough for ``AutoModelForCausalLM.from_pretrained``
to load an official Step-Audio-EditX folder without remote code. The Step1 classes need torch and
transformers' modelling code (seconds to import), so the package does not import them eagerly:

* transformers already imported (ComfyUI, most scripts): register now;
* otherwise: register right after the first ``import transformers`` finishes, through an import hook
  that removes itself once it has fired. Nobody can reach the Auto classes before that import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
import threading

logger = logging.getLogger(__name__)
_TRIGGER = "transformers"
_STEP1_MODULE = ".step_audio_editx.lm.step1"  # relative to this package; importing it registers
_lock = threading.Lock()


def register_now() -> None:
    """Import the Step1 module (its import registers the model type; idempotent)."""
    importlib.import_module(_STEP1_MODULE, __package__)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``transformers`` so registration runs after it."""

    def __init__(self):
        self._asking = threading.local()  # a second copy of the pack has its own hook: they ask each other

    def find_spec(self, fullname, path, target=None):
        if fullname != _TRIGGER or getattr(self._asking, "active", False):
            return None
        # The hook stays until transformers really executes: ``importlib.util.find_spec("transformers")``
        # (availability checks in other libraries) asks here too without importing anything.
        self._asking.active = True
        try:
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None) if finder is not self else None
                spec = find(fullname, path, target) if find is not None else None
                if spec is not None and spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader)
                    return spec
            return None
        finally:
            self._asking.active = False


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _remove_hook()
        try:
            register_now()
        except Exception:  # never break the user's own ``import transformers`` (e.g. torch missing)
            logger.warning("Could not register the Step1 model type with transformers.", exc_info=True)

    def __getattr__(self, name):  # get_resource_reader, is_package ... of the real loader
        if name == "_inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)


_HOOK = _RegisterAfterImport()


def _remove_hook() -> None:
    with _lock:
        if _HOOK in sys.meta_path:
            sys.meta_path.remove(_HOOK)


def ensure_step1_registration() -> None:
    """Register now when transformers is loaded, else once it is (called by the package ``__init__``)."""
    if _TRIGGER in sys.modules:
        register_now()
        return
    with _lock:
        if _HOOK not in sys.meta_path:
            sys.meta_path.insert(0, _HOOK)
