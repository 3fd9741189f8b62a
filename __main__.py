"""``python -m comfyui_step_audio_editx``: the command line (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
