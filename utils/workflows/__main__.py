"""Write (or with ``--check``, compare) the example workflows: ``python -m comfyui_step_audio_editx.utils.workflows``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import EXAMPLES, api_workflow, ui_workflow

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_workflows"


def rendered() -> dict[Path, str]:
    """Every example file's path and its exact text."""
    files = {}
    for spec in EXAMPLES:
        files[EXAMPLES_DIR / f"{spec.name}.json"] = json.dumps(ui_workflow(spec), indent=2) + "\n"
        files[EXAMPLES_DIR / "api" / f"{spec.name}_api.json"] = json.dumps(api_workflow(spec), indent=2) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report files that differ from the spec")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(("differs: " if args.check else "wrote: ") + str(path))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
