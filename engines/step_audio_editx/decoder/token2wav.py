"""Token2Wav: generated LM audio ids -> 24 kHz speech in the voice of the prompt (batched).

Equivalent to the official ``CosyVoice.token2wav_nonstream`` as ``tts.py`` calls it:

* ids (65536-based) of the generated stream AND of the prompt are regrouped the same way
  (``frontend.codes.regroup``: 5 ids -> 3 decoder frames, ragged tail padded);
* the prompt mel is stretched (nearest) to ``up_stride`` x the prompt's token frames;
* ``tts.py`` rounds prompt mel and speaker embedding to bfloat16 before the call
  (``prompt_cast_bf16=True``, the default, reproduces it; it moves the output mel by ~1e-3);
* flow (10 Euler steps, cosine schedule, guidance 0.7 from the yaml) -> the prompt part of the mel is
  cut off -> HiFT -> ``SAMPLES_PER_GROUP`` (2,880) samples per 5-token group, clipped to the yaml's
  ``audio_limit``.

Noise sources, each drawn per clip from the caller's ``torch.Generator`` or passed in:
(1) the flow's initial noise ``z [80, T_mel]`` over the whole (prompt + generated) mel sequence; the
official code slices a ``randn(1, 80, 30000)`` buffer drawn once per process (unseeded).
(2) HiFT's additive sine-source noise ``[S*T_gen_mel, nb_harmonics+1]``. The official initial
harmonic phases have no effect on the output (see ``hift.py``) and are not drawn.
The parity fixtures replaced both by numpy arrays (``cfm_noise_used`` and the ``hift_rng_calls``
recipe), which tests pass in through ``cfm_noise`` / ``sine_noise``.

Batching: clips of different lengths are right-padded with masks; with one generator per clip (or
explicit noise) every clip's output equals decoding it alone (to float32 rounding).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import AUDIO_TOKEN_OFFSET, COSYVOICE_SUBDIR, DECODER_CFM_STEPS, VQ06_LAST_ID, VQ06_PER_GROUP
from ..frontend.codes import regroup
from ..model_loader import MODEL_BACKENDS, choose_dtype, resolve_attn_implementation, resolve_device
from .attention import KeyPadding
from .config import CONFIG_FILENAME, CosyVoiceConfig, load_cosyvoice_config
from .errors import Token2WavInputError
from .flow import FlowModel
from .hift import HiFTGenerator, periodic_hann
from .mel import PromptMelExtractor
from .weights import MissingDecoderFileError, load_into, missing_file_message, read_state_dict

logger = logging.getLogger(__name__)

FLOW_FILENAME = "flow.pt"
HIFT_FILENAME = "hift.pt"
DEFAULT_HIFT_DTYPE = "fp32"
OFFICIAL_PROMPT_CAST = torch.bfloat16  # tts.py: speech_feat.to(torch.bfloat16), speech_embedding.to(torch.bfloat16)

Generators = torch.Generator | Sequence[torch.Generator | None] | None
IdList = Sequence[int] | torch.Tensor


@dataclass
class Token2WavInput:
    """One clip to decode.

    ``generated_ids``: LM audio ids (65536-based, EOS removed) of the new speech; any length >= 1.
    ``prompt_ids``: LM audio ids of the prompt audio (the interleaved vq02/vq06 ids).
    ``prompt_mel``: ``[T, num_mels]`` log-mel of the prompt audio (:meth:`Token2Wav.prompt_mel`).
    ``speaker_embedding``: ``[spk_embed_dim]`` (192) CAM++ embedding of the prompt audio.
    """

    generated_ids: IdList
    prompt_ids: IdList
    prompt_mel: torch.Tensor
    speaker_embedding: torch.Tensor


@dataclass
class PreparedBatch:
    """Decoder inputs of a batch, right-padded (all on the decoder's device)."""

    frames: torch.Tensor  # [B, T_tok, 2] int64: prompt frames then generated frames, zeros after
    token_padding: KeyPadding  # valid token frames per row
    prompt_frames: tuple[int, ...]  # token frames of each prompt
    generated_frames: tuple[int, ...]  # token frames of each generated stream
    cond: torch.Tensor  # [B, up*T_tok, num_mels] float32: stretched prompt mel, zeros after
    speaker: torch.Tensor  # [B, spk_embed_dim] float32 (bf16-rounded when prompt_cast_bf16)


@dataclass
class Token2WavOutput:
    """Decoded clip: ``waveform [N]`` float32 at 24 kHz (N = 2,880 per 5-token group),
    ``mel [num_mels, T]`` generated mel (50 Hz), ``f0 [T]`` Hz, ``source [N]`` NSF excitation."""

    waveform: torch.Tensor
    mel: torch.Tensor
    f0: torch.Tensor
    source: torch.Tensor


def _ids(ids: IdList, what: str, index: int) -> list[int]:
    values = ids.reshape(-1).tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
    if not values:
        raise Token2WavInputError(
            f"clip {index}: {what} is empty; the decoder needs at least one audio token "
            "(an empty generation usually means the language model stopped at once; retry with another seed)."
        )
    for pos, i in enumerate(values):
        if not AUDIO_TOKEN_OFFSET <= i <= VQ06_LAST_ID:
            raise Token2WavInputError(
                f"clip {index}: {what}[{pos}] = {i} is not an audio token id ({AUDIO_TOKEN_OFFSET}..{VQ06_LAST_ID}); "
                "strip text and control tokens (EOS) before decoding."
            )
    return values


def _module(make: Callable[[], nn.Module], state: dict[str, torch.Tensor] | None, filename: str) -> nn.Module:
    """Build a module; with a checkpoint, on the meta device and adopt the checkpoint's tensors (no random
    init, no copy), else randomly initialised on the CPU."""
    if state is None:
        return make()
    with torch.device("meta"):
        module = make()
    load_into(module, state, filename, assign=True)
    return module


def _per_row(generators: Generators, batch: int) -> list[torch.Generator | None]:
    if generators is None or isinstance(generators, torch.Generator):
        return [generators] * batch
    generators = list(generators)
    if len(generators) != batch:
        raise Token2WavInputError(f"got {len(generators)} generators for {batch} clips; pass one per clip or one in all.")
    return generators


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _row_noise(noise: Sequence[torch.Tensor] | None, batch: int, what: str) -> list[torch.Tensor] | None:
    if noise is None:
        return None
    noise = list(noise)
    if len(noise) != batch:
        raise Token2WavInputError(f"got {len(noise)} {what} tensors for {batch} clips; pass one per clip.")
    return [torch.as_tensor(n) for n in noise]


class Token2Wav:
    """Flow decoder + HiFT vocoder + prompt mel front end of one ``CosyVoice-300M-25Hz`` folder."""

    def __init__(
        self,
        config: CosyVoiceConfig,
        flow: FlowModel,
        hift: HiFTGenerator,
        device: torch.device,
        dit_attn: str,
        conformer_attn: str,
    ):
        self.config = config
        self.flow = flow.eval()
        self.hift = hift.eval()
        self.device = device
        self.mel_extractor = PromptMelExtractor(config.mel)
        self.flow.decoder.estimator.set_attn_backend(dit_attn)
        self.flow.encoder.set_attn_backend(conformer_attn)
        self.dit_attn, self.conformer_attn = dit_attn, conformer_attn

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        config: CosyVoiceConfig,
        flow_state: dict[str, torch.Tensor] | None = None,
        hift_state: dict[str, torch.Tensor] | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str = "auto",
        hift_dtype: str | torch.dtype | None = DEFAULT_HIFT_DTYPE,
    ) -> Token2Wav:
        """Modules for ``config``; state dicts (weight norm folded) are loaded strictly, or random init if None.
        ``hift_dtype=None`` runs the vocoder in the flow's dtype."""
        device = resolve_device(device)
        flow_dtype = choose_dtype(device, dtype)
        voc_dtype = flow_dtype if hift_dtype is None else choose_dtype(device, hift_dtype)
        if flow_dtype == torch.float64:
            voc_dtype = torch.float64  # a float64 model (exactness checks) is float64 throughout
        dit_attn = resolve_attn_implementation(attn_implementation, "dit", device)
        conformer_request = attn_implementation if attn_implementation in MODEL_BACKENDS["conformer"] else "auto"
        conformer_attn = resolve_attn_implementation(conformer_request, "conformer", device)
        flow = _module(lambda: FlowModel(config.flow), flow_state, FLOW_FILENAME)
        hift = _module(lambda: HiFTGenerator(config.hift), hift_state, HIFT_FILENAME)
        hift.window = periodic_hann(config.hift.istft_n_fft)  # non-persistent buffer: not in the checkpoint
        flow.to(device=device, dtype=flow_dtype)
        hift.to(device=device)
        hift.to_compute_dtype(voc_dtype)
        logger.info("Token2Wav on %s: flow %s, HiFT %s, DiT attention %s, Conformer attention %s",
                    device, flow_dtype, voc_dtype, dit_attn, conformer_attn)
        return cls(config, flow, hift, device, dit_attn, conformer_attn)

    @classmethod
    def from_folder(
        cls,
        cosyvoice_dir: str | Path,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str = "auto",
        hift_dtype: str | torch.dtype | None = DEFAULT_HIFT_DTYPE,
    ) -> Token2Wav:
        """Load ``cosyvoice.yaml``, ``flow.pt`` and ``hift.pt`` from ``cosyvoice_dir`` (the
        ``CosyVoice-300M-25Hz`` folder, or the Step-Audio-EditX folder that contains it).

        ``dtype`` (flow): "auto" = fp32 on CPU, bf16 on GPUs with compute capability >= 8 (fp16 below).
        ``hift_dtype`` (vocoder conv stack): fp32 by default, because its deep residual stack loses
        waveform accuracy in bf16 (``bench/bench_decoder.py`` measures it); None = same as ``dtype``.
        f0, sine source and (i)STFT always run in fp32. ``attn_implementation``: "auto" or a backend name; the DiT
        uses it (flash_attention_2 > xformers > sdpa > eager when "auto"), the Conformer uses sdpa/eager.
        """
        folder = Path(cosyvoice_dir)
        if not (folder / CONFIG_FILENAME).is_file() and (folder / COSYVOICE_SUBDIR).is_dir():
            folder = folder / COSYVOICE_SUBDIR
        for name in (CONFIG_FILENAME, FLOW_FILENAME, HIFT_FILENAME):
            if not (folder / name).is_file():
                raise MissingDecoderFileError(missing_file_message(folder / name))
        config = load_cosyvoice_config(folder / CONFIG_FILENAME)
        return cls.build(config, read_state_dict(folder / FLOW_FILENAME), read_state_dict(folder / HIFT_FILENAME),
                         device=device, dtype=dtype, attn_implementation=attn_implementation, hift_dtype=hift_dtype)

    # -- placement -----------------------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"flow": self.flow, "hift": self.hift}

    def to(self, device: str | torch.device) -> Token2Wav:
        """Move both networks (offload / reload); dtypes stay as loaded."""
        device = torch.device(device)
        self.flow.to(device)
        self.hift.to(device)
        self.device = device
        return self

    # -- facts ---------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.hift.sampling_rate

    @property
    def samples_per_group(self) -> int:
        """Output samples per 5-token group (3 token frames): 2,880 with the official config."""
        return VQ06_PER_GROUP * self.config.samples_per_token_frame

    @property
    def flow_dtype(self) -> torch.dtype:
        return self.flow.dtype

    @property
    def hift_dtype(self) -> torch.dtype:
        return self.hift.dtype

    def prompt_mel(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Prompt log-mel ``[T, num_mels]`` float32 of ``wav [N]`` (any rate; resampled to 24 kHz), on the
        wav's device. Officially computed from the whole prompt wav after the 0.6 peak normalisation
        (untrimmed); :meth:`prepare` stretches it to the prompt's token frames."""
        return self.mel_extractor(wav, sample_rate)

    # -- stages --------------------------------------------------------------------------------
    def prepare(self, items: Sequence[Token2WavInput], prompt_cast_bf16: bool = True) -> PreparedBatch:
        """Regroup ids into frames, stretch prompt mels, pad the batch (see :class:`PreparedBatch`)."""
        if not items:
            raise Token2WavInputError("nothing to decode: the list of clips is empty.")
        cfg = self.config
        up, n_mels, spk_dim = cfg.mel_frames_per_token_frame, cfg.flow.output_size, cfg.flow.spk_embed_dim
        rows, prompt_frames, gen_frames, mels, spks = [], [], [], [], []
        for b, item in enumerate(items):
            p = regroup(_ids(item.prompt_ids, "prompt_ids", b))
            g = regroup(_ids(item.generated_ids, "generated_ids", b))
            rows.append(p + g)
            prompt_frames.append(len(p))
            gen_frames.append(len(g))
            mel = torch.as_tensor(item.prompt_mel)
            if mel.ndim == 3 and mel.shape[0] == 1:
                mel = mel[0]
            if mel.ndim != 2 or mel.shape[1] != n_mels or mel.shape[0] < 1:
                raise Token2WavInputError(
                    f"clip {b}: prompt_mel must be [T, {n_mels}] (Token2Wav.prompt_mel), got {tuple(mel.shape)}."
                )
            spk = torch.as_tensor(item.speaker_embedding).reshape(-1)
            if spk.numel() != spk_dim:
                raise Token2WavInputError(f"clip {b}: speaker_embedding must have {spk_dim} values, got {spk.numel()}.")
            if prompt_cast_bf16:
                mel, spk = mel.to(OFFICIAL_PROMPT_CAST), spk.to(OFFICIAL_PROMPT_CAST)
            mel = F.interpolate(mel.float().T[None], size=up * len(p), mode="nearest")[0].T
            mels.append(mel.to(self.device))
            spks.append(spk.float().to(self.device))
        t_tok = max(len(r) for r in rows)
        frames = torch.zeros(len(rows), t_tok, 2, dtype=torch.long)
        for b, r in enumerate(rows):
            frames[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        dev = self.device
        cond = torch.zeros(len(rows), up * t_tok, n_mels, device=dev)
        for b, mel in enumerate(mels):
            cond[b, : mel.shape[0]] = mel
        return PreparedBatch(
            frames=frames.to(dev),
            token_padding=KeyPadding.from_lengths([len(r) for r in rows], dev, t_tok),
            prompt_frames=tuple(prompt_frames),
            generated_frames=tuple(gen_frames),
            cond=cond,
            speaker=torch.stack(spks),
        )

    @torch.inference_mode()
    def run_flow(
        self,
        prepared: PreparedBatch,
        generators: Generators = None,
        cfm_noise: Sequence[torch.Tensor] | None = None,
        n_timesteps: int = DECODER_CFM_STEPS,
        progress: bool = False,
    ) -> list[torch.Tensor]:
        """Generated mel per clip, ``[num_mels, up * generated_frames]`` float32 (prompt part removed).

        ``cfm_noise``: per clip ``[num_mels, >= T_mel]`` initial noise over the whole sequence (sliced like
        the official buffer); otherwise drawn per clip from ``generators``.
        """
        up, n_mels = self.config.mel_frames_per_token_frame, self.config.flow.output_size
        b = prepared.frames.shape[0]
        totals = [up * n for n in prepared.token_padding.lengths]
        precise = self.flow.precise_dtype
        noise = torch.zeros(b, up * prepared.frames.shape[1], n_mels, device=self.device, dtype=precise)
        given = _row_noise(cfm_noise, b, "cfm_noise")
        gens = _per_row(generators, b)
        for i, total in enumerate(totals):
            if given is not None:
                z = given[i].reshape(-1, given[i].shape[-1]) if given[i].ndim == 3 else given[i]
                if z.shape[0] != n_mels or z.shape[1] < total:
                    raise Token2WavInputError(f"cfm_noise[{i}] must be [{n_mels}, >= {total}], got {tuple(given[i].shape)}.")
                z = z[:, :total]
            else:
                z = _randn((n_mels, total), gens[i], self.device)
            noise[i, :total] = z.to(device=self.device, dtype=precise).T
        mel = self.flow(prepared.frames, prepared.token_padding, prepared.cond, prepared.speaker, noise, n_timesteps,
                        progress=progress)
        return [
            mel[i, up * p: up * (p + g)].T.contiguous()
            for i, (p, g) in enumerate(zip(prepared.prompt_frames, prepared.generated_frames))
        ]

    @torch.inference_mode()
    def run_vocoder(
        self,
        mels: Sequence[torch.Tensor],
        generators: Generators = None,
        sine_noise: Sequence[torch.Tensor] | None = None,
    ) -> list[Token2WavOutput]:
        """HiFT on each clip's mel ``[num_mels, T]``. ``sine_noise``: per clip ``[S*T, nb_harmonics+1]``
        additive source noise (zeros for a noise-free source); otherwise drawn from ``generators``."""
        cfg = self.config.hift
        b = len(mels)
        lengths = [int(m.shape[-1]) for m in mels]
        t = max(lengths)
        s, dim = cfg.samples_per_frame, cfg.nb_harmonics + 1
        precise = self.hift.precise
        batch = torch.zeros(b, mels[0].shape[0], t, device=self.device, dtype=precise)
        noise = torch.zeros(b, s * t, dim, device=self.device, dtype=precise)
        given = _row_noise(sine_noise, b, "sine_noise")
        gens = _per_row(generators, b)
        for i, m in enumerate(mels):
            batch[i, :, : lengths[i]] = m.to(self.device, precise)
            n = s * lengths[i]
            if given is not None:
                z = given[i].reshape(-1, given[i].shape[-1])
                if tuple(z.shape) != (n, dim):
                    raise Token2WavInputError(f"sine_noise[{i}] must be [{n}, {dim}], got {tuple(given[i].shape)}.")
            else:
                z = _randn((n, dim), gens[i], self.device)
            noise[i, :n] = z.to(device=self.device, dtype=precise)
        out = self.hift(batch, lengths, noise)
        return [
            Token2WavOutput(
                waveform=out.speech[i, : s * n], mel=mels[i], f0=out.f0[i, :n], source=out.source[i, : s * n]
            )
            for i, n in enumerate(lengths)
        ]

    def decode(
        self,
        items: Sequence[Token2WavInput],
        generators: Generators = None,
        *,
        cfm_noise: Sequence[torch.Tensor] | None = None,
        sine_noise: Sequence[torch.Tensor] | None = None,
        prompt_cast_bf16: bool = True,
        n_timesteps: int = DECODER_CFM_STEPS,
        progress: bool = False,
    ) -> list[Token2WavOutput]:
        """Decode clips in one batch. ``generators``: one per clip (reproducible per clip whatever the
        batch), one shared (drawn clip by clip: flow noise of all clips, then vocoder noise), or None
        (global RNG). ``prompt_cast_bf16`` reproduces ``tts.py``'s bf16 rounding of prompt mel and speaker
        embedding (official behaviour, default). ``progress`` shows a tqdm bar over the Euler steps.
        Outputs are on the decoder's device, float32.
        """
        prepared = self.prepare(items, prompt_cast_bf16=prompt_cast_bf16)
        mels = self.run_flow(prepared, generators, cfm_noise, n_timesteps, progress)
        return self.run_vocoder(mels, generators, sine_noise)

    def decode_one(self, item: Token2WavInput, generator: torch.Generator | None = None, **kwargs) -> Token2WavOutput:
        return self.decode([item], None if generator is None else [generator], **kwargs)[0]
