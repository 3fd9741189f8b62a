"""Finding, checking and downloading the official model folders.

Users keep the hub layout (facts doc §1): ``Step-Audio-EditX/`` (language model, text tokenizer,
CosyVoice decoder) and ``Step-Audio-Tokenizer/`` (vq02 Paraformer + centroids, vq06 ONNX). We look
for them under the search roots ComfyUI gives us (``models/TTS`` and ``extra_model_paths.yaml``
entries) or under a folder the user names, and download only the files the pipeline reads.

StepFun's 4-bit ``Step-Audio-EditX-AWQ-4bit/`` can take the bf16 folder's place for the language model.
The decoder (``CosyVoice-300M-25Hz/``) and ``tokenizer.model`` are read from the quantized folder when it
has them, else from a ``Step-Audio-EditX/`` beside it; missing decoder files are downloaded from the bf16
repo into that sibling folder (only those files, not its 7 GB language model).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from .constants import AWQ_DIRNAME, HUB_REPO_EDITX_AWQ, CAMPPLUS_FILE, COSYVOICE_SUBDIR, PARAFORMER_SUBDIR, VQ02_CENTROIDS_FILE, VQ06_ONNX_FILE
from .file_readers import DamagedModelFileError, read_model_json
from .frontend.semantic import cache_path_next_to

logger = logging.getLogger(__name__)

EDITX_REPO = "stepfun-ai/Step-Audio-EditX"
AWQ_REPO = HUB_REPO_EDITX_AWQ
TOKENIZER_REPO = "stepfun-ai/Step-Audio-Tokenizer"
EDITX_DIRNAME = "Step-Audio-EditX"
TOKENIZER_DIRNAME = "Step-Audio-Tokenizer"
QUANT_CONFIG_KEY = "quantization_config"

WEIGHTS_INDEX = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"

# Files the pipeline reads, relative to each folder (the LM weights are resolved from the index).
LM_FILES: tuple[str, ...] = ("config.json",)
TEXT_TOKENIZER_FILE = "tokenizer.model"
DECODER_FILES: tuple[str, ...] = (
    f"{COSYVOICE_SUBDIR}/cosyvoice.yaml",
    f"{COSYVOICE_SUBDIR}/flow.pt",
    f"{COSYVOICE_SUBDIR}/hift.pt",
    f"{COSYVOICE_SUBDIR}/{CAMPPLUS_FILE}",
)
EDITX_FILES: tuple[str, ...] = (*LM_FILES, TEXT_TOKENIZER_FILE, *DECODER_FILES)
TOKENIZER_FILES: tuple[str, ...] = (
    VQ02_CENTROIDS_FILE,
    f"{PARAFORMER_SUBDIR}/model.pt",
    f"{PARAFORMER_SUBDIR}/config.yaml",
    f"{PARAFORMER_SUBDIR}/am.mvn",
)


class ModelFilesError(FileNotFoundError):
    """Model files are missing: the message lists each file, its folder and the hub repo to get it from."""


@dataclass(frozen=True)
class MissingFile:
    repo: str
    folder: Path
    relpath: str

    def describe(self) -> str:
        return f"{self.folder / self.relpath}  (from https://huggingface.co/{self.repo}, file {self.relpath})"


def is_quantized_folder(folder: Path) -> bool:
    """A quantized LM folder: named like StepFun's AWQ repo, or its config.json has a quantization_config."""
    folder = Path(folder)
    if folder.name == AWQ_DIRNAME:
        return True
    try:
        return QUANT_CONFIG_KEY in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _shared_root(editx: Path, relpath: str) -> Path:
    """Where a decoder / text-tokenizer file is read from: the LM folder, else (quantized folders) the bf16
    ``Step-Audio-EditX`` beside it when that has the file, else the LM folder again when it is the bf16 one."""
    if (editx / relpath).is_file() or not is_quantized_folder(editx):
        return editx
    sibling = editx.parent / EDITX_DIRNAME
    return sibling if (sibling / relpath).is_file() else editx


@dataclass(frozen=True)
class ModelFolders:
    """The two official folders, resolved to absolute paths."""

    editx: Path
    tokenizer: Path
    lm_weights: bool = True  # False: the language model runs on a server; its config and weights are not read

    @property
    def quantized(self) -> bool:
        return is_quantized_folder(self.editx)

    @property
    def decoder_root(self) -> Path:
        """The folder holding ``CosyVoice-300M-25Hz/`` (see the module docstring)."""
        root = _shared_root(self.editx, DECODER_FILES[0])
        if root == self.editx and self.quantized and not (self.editx / DECODER_FILES[0]).is_file():
            return self.editx.parent / EDITX_DIRNAME  # where a download of the decoder goes
        return root

    @property
    def text_tokenizer(self) -> Path:
        """The folder holding ``tokenizer.model``."""
        return _shared_root(self.editx, TEXT_TOKENIZER_FILE)

    @property
    def cosyvoice(self) -> Path:
        return self.decoder_root / COSYVOICE_SUBDIR

    @property
    def paraformer(self) -> Path:
        return self.tokenizer / PARAFORMER_SUBDIR

    def missing(self) -> list[MissingFile]:
        if not self.lm_weights:
            return [m for m in self._missing_all() if not _is_lm_file(m.relpath)]
        return self._missing_all()

    def _missing_all(self) -> list[MissingFile]:
        if not self.quantized:
            return missing_editx_files(self.editx) + missing_tokenizer_files(self.tokenizer)
        lm = missing_lm_files(self.editx, AWQ_REPO, (*LM_FILES, TEXT_TOKENIZER_FILE))
        lm = [m for m in lm if m.relpath != TEXT_TOKENIZER_FILE or self.text_tokenizer == self.editx]
        decoder_repo = AWQ_REPO if self.decoder_root == self.editx else EDITX_REPO
        decoder = [MissingFile(decoder_repo, self.decoder_root, f) for f in DECODER_FILES
                   if not (self.decoder_root / f).is_file()]
        return lm + decoder + missing_tokenizer_files(self.tokenizer)

    def verify(self) -> "ModelFolders":
        """Raise ModelFilesError naming every missing file; return self when complete."""
        missing = self.missing()
        if missing:
            raise ModelFilesError(_missing_message(missing))
        return self


def _is_lm_file(relpath: str) -> bool:
    """The language model's own files (config, weights index, weight shards)."""
    return relpath in LM_FILES or relpath == WEIGHTS_INDEX or relpath.endswith(".safetensors")


def weight_files(editx_dir: Path) -> list[str]:
    """Safetensors files of the language model, from the index when there is one."""
    index = editx_dir / WEIGHTS_INDEX
    if index.is_file():
        data = read_model_json(index, EDITX_REPO)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise DamagedModelFileError(f"{index} holds no weight_map. Re-download it from {EDITX_REPO}.")
        return sorted(set(map(str, weight_map.values())))
    return [SINGLE_WEIGHTS]


def missing_lm_files(editx_dir: Path, repo: str, files: Sequence[str]) -> list[MissingFile]:
    """``files`` plus the weights (the index and its shards, or model.safetensors) missing from the folder."""
    editx_dir = Path(editx_dir)
    wanted = list(files)
    if (editx_dir / WEIGHTS_INDEX).is_file() or not (editx_dir / SINGLE_WEIGHTS).is_file():
        if not (editx_dir / WEIGHTS_INDEX).is_file():
            wanted.append(WEIGHTS_INDEX)
        else:
            wanted.extend(weight_files(editx_dir))
    return [MissingFile(repo, editx_dir, f) for f in wanted if not (editx_dir / f).is_file()]


def missing_editx_files(editx_dir: Path) -> list[MissingFile]:
    return missing_lm_files(editx_dir, EDITX_REPO, EDITX_FILES)


def missing_tokenizer_files(tokenizer_dir: Path) -> list[MissingFile]:
    tokenizer_dir = Path(tokenizer_dir)
    missing = [MissingFile(TOKENIZER_REPO, tokenizer_dir, f) for f in TOKENIZER_FILES if not (tokenizer_dir / f).is_file()]
    onnx = tokenizer_dir / VQ06_ONNX_FILE
    if not onnx.is_file() and not cache_path_next_to(onnx).is_file():  # our converted copy alone will do
        missing.append(MissingFile(TOKENIZER_REPO, tokenizer_dir, VQ06_ONNX_FILE))
    return missing


def _missing_message(missing: Sequence[MissingFile], after_download: bool = False) -> str:
    lines = "\n".join(f"  - {m.describe()}" for m in missing)
    repos = sorted({(m.repo, m.folder) for m in missing}, key=str)
    how = "\n".join(f"  hf download {repo} --local-dir \"{folder}\"" for repo, folder in repos)
    return (
        f"Step-Audio-EditX model files are missing:\n{lines}\n"
        + ("Download them by hand, for example with:\n" if after_download
           else "Let the pack download them (command line: add --download; ComfyUI: choose the model "
                "'auto (download if missing)' on the Engine node; Python: EngineConfig(download=True)), or "
                "download them yourself, for example with:\n") + how
    )


def _candidates(roots: Iterable[Path], dirname: str) -> list[Path]:
    return [Path(root) / dirname for root in roots]


def find_model_folders(
    search_roots: Sequence[Path | str] = (),
    editx_dir: Path | str | None = None,
    tokenizer_dir: Path | str | None = None,
) -> ModelFolders:
    """Resolve both folders without checking their contents.

    An explicit ``editx_dir`` wins; otherwise the first ``<root>/Step-Audio-EditX`` that exists, else
    the first root's (where a download would go). The tokenizer folder is looked for beside the EditX
    folder, inside it, and under each root.
    """
    roots = [Path(r).expanduser() for r in search_roots]
    if editx_dir is None:
        found = [c for c in _candidates(roots, EDITX_DIRNAME) if c.is_dir()]
        if found:
            editx = found[0]
        elif roots:
            editx = roots[0] / EDITX_DIRNAME
        else:
            raise ModelFilesError(
                "No model folder given and no search roots: pass the Step-Audio-EditX folder, or a models "
                "folder that holds Step-Audio-EditX/ and Step-Audio-Tokenizer/."
            )
    else:
        editx = Path(editx_dir).expanduser()
    if tokenizer_dir is None:
        options = [editx.parent / TOKENIZER_DIRNAME, editx / TOKENIZER_DIRNAME, *_candidates(roots, TOKENIZER_DIRNAME)]
        found = [c for c in options if c.is_dir()]
        tokenizer = found[0] if found else options[0]
    else:
        tokenizer = Path(tokenizer_dir).expanduser()
    return ModelFolders(editx.resolve(), tokenizer.resolve())


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
TRUE_VALUES = ("1", "true", "yes", "on")


def _hub_unreachable_reason() -> str | None:
    """Why a download cannot work right now (offline mode, no DNS), found in milliseconds.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once at import and, without a network, retries each file with
    back-off for ~23 s before failing; both checks here happen before any request. The DNS probe is skipped
    behind a proxy, where the proxy resolves the hub's name.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v, "").strip().lower() in TRUE_VALUES
                                       for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return "offline mode is on (HF_HUB_OFFLINE)"
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"cannot resolve {host} ({exc.strerror or exc}); check the network connection"
    return None


def download_missing(folders: ModelFolders, token: str | bool | None = None) -> ModelFolders:
    """Fetch only the missing files the pipeline reads (resumable, with progress bars).

    Offline machines and failed downloads end in a ModelFilesError that lists every file still
    missing and where to get it.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a hard requirement
        raise ModelFilesError(f"huggingface_hub is not installed ({exc}); pip install huggingface_hub") from exc

    for _round in range(2):  # the second round picks up shards named by a freshly downloaded index
        missing = folders.missing()
        if not missing:
            return folders
        reason = _hub_unreachable_reason()
        if reason:
            raise ModelFilesError(f"Cannot download from Hugging Face: {reason}.\n"
                                  + _missing_message(missing, after_download=True))
        for item in missing:
            item.folder.mkdir(parents=True, exist_ok=True)
            logger.info("Downloading %s from %s", item.relpath, item.repo)
            try:
                _download(hf_hub_download, item, token)
            except Exception as exc:  # network, auth, disk: report everything still missing
                still = folders.missing()
                raise ModelFilesError(
                    f"Downloading {item.relpath} from {item.repo} failed ({type(exc).__name__}: {exc}).\n"
                    + _missing_message(still, after_download=True)
                ) from exc
    return folders.verify()


def _download(hf_hub_download, item: MissingFile, token) -> None:
    """One file; a repo without a weights index (one ``model.safetensors``) gets that file instead."""
    try:
        hf_hub_download(item.repo, item.relpath, local_dir=str(item.folder), token=token)
    except Exception as exc:
        if item.relpath != WEIGHTS_INDEX or "EntryNotFound" not in type(exc).__name__:
            raise
        logger.info("%s has no %s; downloading %s", item.repo, WEIGHTS_INDEX, SINGLE_WEIGHTS)
        hf_hub_download(item.repo, SINGLE_WEIGHTS, local_dir=str(item.folder), token=token)


def resolve_model_folders(
    search_roots: Sequence[Path | str] = (),
    editx_dir: Path | str | None = None,
    tokenizer_dir: Path | str | None = None,
    download: bool = False,
    token: str | bool | None = None,
    lm_weights: bool = True,
) -> ModelFolders:
    """Find the folders and make sure every file is there (downloading when allowed). ``lm_weights=False``
    (the language model runs on a server): the LM's config and weights are neither needed nor downloaded."""
    folders = replace(find_model_folders(search_roots, editx_dir, tokenizer_dir), lm_weights=lm_weights)
    if download:
        return download_missing(folders, token=token)
    return folders.verify()
