"""Random-weight ``CosyVoice-300M-25Hz`` folders (tiny for tests, full size for benchmarks), official formats.

``cosyvoice.yaml`` keeps the official tags and keys (tiny widths), ``flow.pt`` / ``hift.pt`` are torch
state-dict pickles with the official key names, HiFT convolutions in the
``parametrizations.weight.original0/1`` weight-norm layout the official checkpoint uses.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import CONFIG_FILENAME, load_cosyvoice_config
from .token2wav import FLOW_FILENAME, HIFT_FILENAME, Token2Wav
from .weights import WEIGHT_NORM_DIM

_YAML_TEMPLATE = """
mel_conf: {{num_mels: 80, n_fft: 1920, hop_size: 480, win_size: 1920, sampling_rate: 24000, fmin: 0, fmax: 8000}}
flow: !new:stepvocoder.cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
  input_size: {d}
  output_size: 80
  spk_embed_dim: 192
  output_type: 'mel'
  vocab_size: 5121
  input_embedding: !new:stepvocoder.cosyvoice2.embedding.dual_codebook.DualCodebookEmbedding
    vocab_size: 5121
    input_size: {d}
  encoder: !new:stepvocoder.cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
    input_size: {d}
    output_size: {d}
    input_layer: 'linear'
    pre_lookahead_len: 3
    num_blocks: {blocks}
    num_up_blocks: {up_blocks}
    up_stride: 2
    up_scale_factor: 2
    attention_heads: {heads}
    pos_enc_layer_type: 'rel_pos_espnet'
    selfattention_layer_type: 'rel_selfattn'
    key_bias: true
    linear_units: {ffn}
    normalize_before: True
  decoder: !new:stepvocoder.cosyvoice2.flow.flow_matching.CausalConditionalCFM
    inference_cfg_rate: 0.7
    estimator: !new:stepvocoder.cosyvoice2.flow.decoder_dit.DiT
      in_channels: 320
      out_channels: 80
      mlp_ratio: 4.0
      depth: {depth}
      num_heads: {dit_heads}
      head_dim: {head_dim}
      hidden_size: {dit_hidden}
hift: !new:stepvocoder.cosyvoice2.hifigan.generator.HiFTGenerator
  in_channels: 80
  base_channels: {base}
  nb_harmonics: 8
  sampling_rate: 24000
  nsf_alpha: 0.1
  nsf_sigma: 0.003
  nsf_voiced_threshold: 10
  upsample_rates: [8, 5, 3]
  upsample_kernel_sizes: [16, 11, 7]
  istft_params: {{n_fft: 16, hop_len: 4}}
  resblock_kernel_sizes: [3, 7, 11]
  resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
  source_resblock_kernel_sizes: [7, 7, 11]
  source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
  lrelu_slope: 0.1
  audio_limit: 0.99
  f0_predictor: !new:stepvocoder.cosyvoice2.hifigan.f0_predictor.ConvRNNF0Predictor
    num_class: 1
    in_channels: 80
    cond_channels: {base}
"""
# Full size: the official yaml values (facts doc §7; the HiFT widths are reconstructed, see the parity README).
COSYVOICE_FULL_DIMS: dict[str, int] = {"d": 512, "blocks": 6, "up_blocks": 4, "heads": 8, "ffn": 2048, "depth": 16, "dit_heads": 8,
             "head_dim": 64, "dit_hidden": 512, "base": 512}
COSYVOICE_TINY_DIMS: dict[str, int] = {"d": 64, "blocks": 2, "up_blocks": 2, "heads": 4, "ffn": 128, "depth": 2, "dit_heads": 4,
             "head_dim": 16, "dit_hidden": 64, "base": 32}


def cosyvoice_yaml(dims: dict[str, int]) -> str:
    """A ``cosyvoice.yaml`` with the official tags and keys and the given widths (``COSYVOICE_*_DIMS``)."""
    return _YAML_TEMPLATE.format(**dims)


_PARAM_G = ".parametrizations.weight.original0"
_PARAM_V = ".parametrizations.weight.original1"
_PLAIN_CONVS = ("source_downs.",)  # the only HiFT convolutions the official model keeps without weight norm


def to_weight_norm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split HiFT conv weights into the official (g, v) weight-norm pair: v = w, g = ||w|| per output channel."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() >= 3 and not key.startswith(_PLAIN_CONVS):
            base = key[: -len(".weight")]
            out[base + _PARAM_G] = torch.norm_except_dim(value, 2, WEIGHT_NORM_DIM)
            out[base + _PARAM_V] = value
        else:
            out[key] = value
    return out


def write_random_cosyvoice(folder: Path, dims: dict[str, int] = COSYVOICE_TINY_DIMS, seed: int = 0) -> None:
    """Write cosyvoice.yaml, flow.pt and hift.pt (random, seeded) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILENAME).write_text(cosyvoice_yaml(dims))
    config = load_cosyvoice_config(folder / CONFIG_FILENAME)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t2w = Token2Wav.build(config, device="cpu", dtype="fp32", attn_implementation="eager")
    flow = {k: v.contiguous() for k, v in t2w.flow.state_dict().items()}
    hift = {k: v.float().contiguous() for k, v in t2w.hift.state_dict().items()}
    torch.save(flow, folder / FLOW_FILENAME)
    torch.save(to_weight_norm_layout(hift), folder / HIFT_FILENAME)
    (folder / "FLOW_VERSION").write_text("tiny random-weight model written by comfyui_step_audio_editx\n")
