"""``import comfyui_step_audio_editx`` alone lets transformers' Auto classes load a Step1 folder (no remote code).

Each case runs in a fresh interpreter: the registration must come from the package import itself, not
from another test having imported the ``lm`` subpackage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PACKAGE = "comfyui_step_audio_editx"


def _run(code: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_package_import_registers_step1_before_transformers_is_imported(tiny_model_root):
    out = _run(f"""
        import importlib.util
        import sys
        import {PACKAGE}
        print("torch_loaded_by_package_import", "torch" in sys.modules)
        assert importlib.util.find_spec("transformers") is not None  # an availability check imports nothing
        assert "transformers" not in sys.modules
        from transformers import AutoConfig, AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tiny_model_root / "Step-Audio-EditX")!r},
                                                     trust_remote_code=False)
        print("class", type(model).__module__, type(model).__name__)
        print("config", type(AutoConfig.for_model("step1")).__name__)
        print("hook_left", any(type(f).__module__.endswith("step1_registration") for f in sys.meta_path))
    """)
    assert "torch_loaded_by_package_import False" in out  # the package import stays cheap
    assert f"class {PACKAGE}.engines.step_audio_editx.lm.step1 Step1ForCausalLM" in out
    assert "config Step1Config" in out
    assert "hook_left False" in out  # the hook removed itself once it had fired


def test_package_import_registers_step1_when_transformers_is_already_loaded(tiny_model_root):
    out = _run(f"""
        from transformers import AutoModelForCausalLM
        import {PACKAGE}
        model = AutoModelForCausalLM.from_pretrained({str(tiny_model_root / "Step-Audio-EditX")!r})
        print("class", type(model).__name__)
    """)
    assert "class Step1ForCausalLM" in out


def test_without_the_package_step1_is_unknown(tiny_model_root):
    """The control: a fresh interpreter that never imports the pack cannot load the folder."""
    out = _run(f"""
        from transformers import AutoConfig
        try:
            AutoConfig.from_pretrained({str(tiny_model_root / "Step-Audio-EditX")!r})
            print("loaded")
        except (ValueError, KeyError) as exc:
            print("refused")
    """)
    assert "refused" in out
