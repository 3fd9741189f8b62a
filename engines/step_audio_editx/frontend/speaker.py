"""Speaker embedding: CAM++ (``campplus.onnx``) through onnxruntime, as the official CosyVoice front end runs it.

Input: the untrimmed, 0.6-capped clip resampled to 16 kHz (``PreparedAudio.wav16k``). Features: kaldi
fbank, 80 bins, dither 0, on the unscaled wave, time mean removed. Output: one 192-d vector per clip.
The official session uses the CPU provider (the model is small); other providers can be passed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..constants import CAMPPLUS_FILE, HUB_REPO_EDITX, SPEAKER_FBANK_BINS
from ..file_readers import open_onnx_session
from .fbank import speaker_fbank

logger = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class SpeakerEncoder:
    """16 kHz mono clips -> CAM++ speaker embeddings ``[B, 192]`` float32 (CPU).

    Clips with the same number of fbank frames share one onnxruntime call (CAM++ pools over time,
    so clips of different lengths cannot be padded into one batch without changing the result).
    """

    def __init__(self, session):
        self.session = session
        inputs = session.get_inputs()
        self.input_name = inputs[0].name
        width = inputs[0].shape[-1]
        if isinstance(width, int) and width != SPEAKER_FBANK_BINS:
            raise ValueError(
                f"campplus.onnx expects {width}-bin features; the official CAM++ takes {SPEAKER_FBANK_BINS}."
            )

    @classmethod
    def from_onnx(
        cls, path: str | Path, providers: Sequence[str] = DEFAULT_PROVIDERS, intra_op_num_threads: int | None = None
    ) -> SpeakerEncoder:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found. It ships in Step-Audio-EditX/CosyVoice-300M-25Hz/{CAMPPLUS_FILE}."
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = intra_op_num_threads
        session = open_onnx_session(path, HUB_REPO_EDITX, sess_options=options, providers=list(providers))
        return cls(session)

    @classmethod
    def from_folder(cls, cosyvoice_dir: str | Path, providers: Sequence[str] = DEFAULT_PROVIDERS) -> SpeakerEncoder:
        """Load ``campplus.onnx`` from the ``CosyVoice-300M-25Hz`` folder."""
        return cls.from_onnx(Path(cosyvoice_dir) / CAMPPLUS_FILE, providers)

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        """Mono 16 kHz ``[samples]`` -> CAM++ input ``[frames, 80]`` (fbank minus its time mean)."""
        if wav16k.dim() != 1:
            raise ValueError(f"the speaker encoder takes mono 16 kHz clips [samples], got shape {tuple(wav16k.shape)}")
        return speaker_fbank(wav16k.to(torch.float32))

    def embed(self, wavs16k: Sequence[torch.Tensor]) -> torch.Tensor:
        """Speaker embeddings ``[len(wavs16k), dim]`` float32 on CPU, in input order."""
        feats = [self.features(w).cpu().numpy() for w in wavs16k]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, f in enumerate(feats):
            groups[f.shape[0]].append(i)
        out: list[np.ndarray | None] = [None] * len(feats)
        for members in groups.values():
            batch = np.stack([feats[i] for i in members]).astype(np.float32)
            result = self.session.run(None, {self.input_name: batch})[0].reshape(len(members), -1)
            for row, i in enumerate(members):
                out[i] = result[row]
        if not out:
            return torch.empty(0, 0)
        return torch.from_numpy(np.stack(out).astype(np.float32))
