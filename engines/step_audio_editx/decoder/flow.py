"""The flow decoder: decoder token frames + prompt condition + speaker -> 80-bin mel at 50 Hz.

``FlowModel`` mirrors the official ``CausalMaskedDiffWithXvec`` (inference path of
``token2wav_nonstream``): the prompt frames and the generated frames of one clip are one sequence;
the Conformer encoder maps it to ``mu`` (``up_stride`` mel frames per token frame); the first
``2 * prompt_frames`` mel frames carry the (stretched) prompt mel as condition; conditional flow
matching integrates noise -> mel with :class:`CausalConditionalCFM`; the prompt part is cut off.

``CausalConditionalCFM`` is the sampler: ``n`` Euler steps on the cosine schedule
``t_k = 1 - cos(pi/2 * k/n)``, classifier-free guidance ``(1 + r) v(cond) - r v(uncond)`` where the
unconditional branch zeroes ``mu``, speaker and prompt condition (``r`` = ``inference_cfg_rate``).
The ODE state stays float32 whatever dtype the estimator runs in.

Rows of a batch are right-padded; :class:`KeyPadding` carries their lengths. Parameter names follow
the official ``flow.pt`` keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attention import KeyPadding
from .config import FlowConfig
from .conformer import UpsampleConformerEncoder
from .dit import DiT
from .flow_graph import GraphedEstimator
from .embedding import DualCodebookEmbedding


class CausalConditionalCFM(nn.Module):
    """Euler sampler of the conditional flow with classifier-free guidance (key prefix ``decoder.``)."""

    def __init__(self, estimator: DiT, inference_cfg_rate: float):
        super().__init__()
        self.estimator = estimator
        self.inference_cfg_rate = inference_cfg_rate
        self.cuda_graph = True  # on CUDA the steps after the first replay one graph (``flow_graph``)

    @staticmethod
    def time_span(n_timesteps: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[n + 1]`` times of the cosine schedule, computed as the official code does."""
        t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
        return 1 - torch.cos(t * 0.5 * torch.pi)

    def forward(
        self,
        noise: torch.Tensor,
        mu: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        padding: KeyPadding | None,
        n_timesteps: int,
        progress: bool = False,
    ) -> torch.Tensor:
        """Integrate ``noise [B, T, 80]`` to mel ``[B, T, 80]`` in the noise's dtype (float32 normally).

        ``mu`` and ``cond`` are ``[B, T, 80]``, ``spks`` is ``[B, 80]`` (all in the estimator dtype).
        """
        if self.inference_cfg_rate <= 0:
            raise ValueError("inference_cfg_rate must be > 0 (the official sampler asserts it).")
        rate = self.inference_cfg_rate
        b = noise.shape[0]
        t_span = self.time_span(n_timesteps, noise.device, noise.dtype)
        t, dt = t_span[0], t_span[1] - t_span[0]
        mu_in = torch.cat([mu, torch.zeros_like(mu)], dim=0)
        spks_in = torch.cat([spks, torch.zeros_like(spks)], dim=0)
        cond_in = torch.cat([cond, torch.zeros_like(cond)], dim=0)
        padding_in = None if padding is None else padding.repeat(2)
        estimator = GraphedEstimator(self.estimator, mu_in, spks_in, cond_in, padding_in,
                                     self.cuda_graph and n_timesteps > 1)  # one step: nothing would replay
        x = noise
        for step in tqdm(range(1, n_timesteps + 1), desc="flow matching", disable=not progress, leave=False):
            v = estimator(torch.cat([x, x], dim=0), t).to(x.dtype)
            v_cond, v_uncond = v[:b], v[b:]
            x = x + dt * ((1.0 + rate) * v_cond - rate * v_uncond)
            t = t + dt
            if step < n_timesteps:
                dt = t_span[step + 1] - t
        return x


class FlowModel(nn.Module):
    """Token frames -> mel. Attribute names match ``flow.pt`` (``input_embedding``, ``encoder``, ...)."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = DualCodebookEmbedding(cfg.embedding_vocab_size, cfg.embedding_input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.decoder = CausalConditionalCFM(DiT(cfg.estimator), cfg.inference_cfg_rate)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder_proj.weight.dtype

    @property
    def precise_dtype(self) -> torch.dtype:
        """Dtype of the ODE state and the output mel: float32 (float64 for a float64 model)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def encode(self, frames: torch.Tensor, padding: KeyPadding) -> tuple[torch.Tensor, KeyPadding]:
        """``frames [B, T, 2]`` (prompt then generated, right-padded) -> ``mu [B, up*T, 80]`` and its padding."""
        x = self.input_embedding(torch.clamp(frames, min=0))
        valid = padding.float_mask(x.dtype)
        if valid is not None:
            x = x * valid
        h, up_padding = self.encoder(x, padding)
        return self.encoder_proj(h), up_padding

    def speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """CAM++ embedding ``[B, 192]`` -> L2-normalised, projected ``[B, 80]``."""
        return self.spk_embed_affine_layer(F.normalize(embedding.to(self.precise_dtype), dim=1).to(self.dtype))

    def forward(
        self,
        frames: torch.Tensor,
        padding: KeyPadding,
        cond: torch.Tensor,
        embedding: torch.Tensor,
        noise: torch.Tensor,
        n_timesteps: int,
        progress: bool = False,
    ) -> torch.Tensor:
        """Mel ``[B, T_mel, 80]`` (``precise_dtype``) over the whole sequence (prompt part included).

        ``cond [B, T_mel, 80]``: stretched prompt mel at the start of each row, zeros elsewhere;
        ``noise [B, T_mel, 80]``; ``T_mel = up_stride * frames.shape[1]``.
        """
        mu, mel_padding = self.encode(frames, padding)
        spks = self.speaker(embedding)
        return self.decoder(noise.to(self.precise_dtype), mu, spks, cond.to(self.dtype), mel_padding, n_timesteps,
                            progress)
