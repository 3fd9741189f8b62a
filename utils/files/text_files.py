"""Text files given by users (transcripts, manifests): read as UTF-8 with a BOM ignored, errors naming the file."""

from __future__ import annotations

from pathlib import Path

TEXT_ENCODING = "utf-8-sig"  # UTF-8; a leading byte-order mark (Windows Notepad) is dropped, as the nodes do


class TextFileError(ValueError):
    """A text file that is missing, a folder, or not UTF-8; says which file and what to do."""


def read_text_file(path: str | Path, what: str = "text file") -> str:
    """The whole file as text (not stripped)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise TextFileError(f"{what} {path} is a folder; give the file inside it.")
    if not path.is_file():
        raise TextFileError(f"{what} {path} not found; check the path.")
    try:
        return path.read_text(encoding=TEXT_ENCODING)
    except UnicodeDecodeError as exc:
        raise TextFileError(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as "
                            "UTF-8.") from None
    except OSError as exc:
        raise TextFileError(f"cannot read {what} {path}: {exc.strerror or exc}.") from None
