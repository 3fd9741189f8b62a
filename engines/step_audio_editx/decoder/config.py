"""Safe reader of the official ``cosyvoice.yaml``: every dimension of the flow decoder and HiFT vocoder.

The official loader (hyperpyyaml) *executes* the file: ``!new:pkg.Class`` imports and builds classes.
``yaml_nodes`` parses the same file with ``yaml.SafeLoader`` (each tag an inert node, ``!ref`` resolved
by key); here we read the arguments into typed dataclasses. Defaults are the official constructors'
defaults, so a yaml that leaves an argument out describes the model the official code would build.
A class this decoder does not implement, a missing required value or an unsupported option is a
:class:`DecoderConfigError` naming the yaml path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..constants import COSYVOICE_SUBDIR, HUB_REPO_EDITX
from ..file_readers import read_model_text
from .errors import DecoderConfigError
from .yaml_nodes import TaggedNode, parse_yaml_text

CONFIG_FILENAME = "cosyvoice.yaml"

# The official classes this decoder re-implements, keyed by class name (the module path may differ
# between forks; the class name fixes the architecture).
FLOW_CLASS = "CausalMaskedDiffWithXvec"
EMBEDDING_CLASS = "DualCodebookEmbedding"
ENCODER_CLASS = "UpsampleConformerEncoderV2"
CFM_CLASS = "CausalConditionalCFM"
ESTIMATOR_CLASS = "DiT"
HIFT_CLASS = "HiFTGenerator"
F0_PREDICTOR_CLASS = "ConvRNNF0Predictor"

# Options of UpsampleConformerEncoderV2 whose other values would need code we do not have.
_SUPPORTED_ENCODER_OPTIONS = {
    "input_layer": ("linear",),
    "pos_enc_layer_type": ("rel_pos_espnet",),
    "selfattention_layer_type": ("rel_selfattn",),
    "normalize_before": (True,),
}
ACTIVATIONS = ("hardtanh", "tanh", "relu", "selu", "swish", "gelu")

_REQUIRED = object()


# --------------------------------------------------------------------------------------------------
# typed configuration
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MelConfig:
    """Prompt log-mel front end (``mel_conf``): the flow's prompt condition, 50 Hz at 24 kHz."""

    num_mels: int
    n_fft: int
    hop_size: int
    win_size: int
    sampling_rate: int
    fmin: float
    fmax: float | None


@dataclass(frozen=True)
class EncoderConfig:
    """UpsampleConformerEncoderV2: token frames (25 Hz) -> hidden states at ``up_stride`` x the rate."""

    input_size: int
    output_size: int
    pre_lookahead_len: int
    num_blocks: int
    num_up_blocks: int
    up_stride: int
    up_scale_factor: float
    attention_heads: int
    linear_units: int
    key_bias: bool
    activation_type: str


@dataclass(frozen=True)
class DiTConfig:
    """The flow-matching estimator (a DiT with adaLN and a causal conv per block)."""

    in_channels: int
    out_channels: int
    mlp_ratio: float
    depth: int
    num_heads: int
    head_dim: int
    hidden_size: int


@dataclass(frozen=True)
class FlowConfig:
    """CausalMaskedDiffWithXvec: tokens + prompt mel + speaker embedding -> mel."""

    input_size: int
    output_size: int
    spk_embed_dim: int
    vocab_size: int
    embedding_vocab_size: int
    embedding_input_size: int
    encoder: EncoderConfig
    estimator: DiTConfig
    inference_cfg_rate: float


@dataclass(frozen=True)
class F0PredictorConfig:
    num_class: int
    in_channels: int
    cond_channels: int


@dataclass(frozen=True)
class HiFTConfig:
    """HiFTGenerator: mel (50 Hz) -> 24 kHz waveform through NSF source + iSTFT head."""

    in_channels: int
    base_channels: int
    nb_harmonics: int
    sampling_rate: int
    nsf_alpha: float
    nsf_sigma: float
    nsf_voiced_threshold: float
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    istft_n_fft: int
    istft_hop_len: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    source_resblock_kernel_sizes: tuple[int, ...]
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    lrelu_slope: float
    audio_limit: float
    f0_predictor: F0PredictorConfig

    @property
    def samples_per_frame(self) -> int:
        """Output samples per input mel frame: product of the upsample rates times the iSTFT hop."""
        return math.prod(self.upsample_rates) * self.istft_hop_len


@dataclass(frozen=True)
class CosyVoiceConfig:
    """Everything the decoder needs from ``cosyvoice.yaml``."""

    mel: MelConfig
    flow: FlowConfig
    hift: HiFTConfig

    @property
    def mel_frames_per_token_frame(self) -> int:
        return self.flow.encoder.up_stride

    @property
    def samples_per_token_frame(self) -> int:
        return self.mel_frames_per_token_frame * self.hift.samples_per_frame


# --------------------------------------------------------------------------------------------------
# argument readers
# --------------------------------------------------------------------------------------------------
class _Args:
    """Arguments of one yaml node, read by key with the official default when the key is absent."""

    def __init__(self, values: dict, path: str, accepts_extra: bool):
        self.values = values
        self.path = path
        self.accepts_extra = accepts_extra
        self.used: set[str] = set()

    def get(self, key: str, default: Any = _REQUIRED, kind: str = "int") -> Any:
        self.used.add(key)
        if key not in self.values:
            if default is _REQUIRED:
                raise DecoderConfigError(
                    f"cosyvoice.yaml: {self.path}.{key} is missing; the official file states it. "
                    f"Re-download {COSYVOICE_SUBDIR}/{CONFIG_FILENAME} from the hub repo {HUB_REPO_EDITX}."
                )
            return default
        return _convert(self.values[key], kind, f"{self.path}.{key}")

    def node(self, key: str, classes: tuple[str, ...]) -> tuple[TaggedNode | None, _Args | None]:
        self.used.add(key)
        value = self.values.get(key)
        if value is None:
            return None, None
        return value, node_args(value, f"{self.path}.{key}", classes)

    def finish(self) -> None:
        extra = sorted(set(self.values) - self.used)
        if extra and not self.accepts_extra:
            raise DecoderConfigError(
                f"cosyvoice.yaml: {self.path} has argument(s) {', '.join(extra)} that the official class "
                "does not take; the file is not a Step-Audio-EditX CosyVoice-300M-25Hz config."
            )


def _convert(value: Any, kind: str, path: str) -> Any:
    def bad(expected: str) -> DecoderConfigError:
        return DecoderConfigError(f"cosyvoice.yaml: {path} should be {expected}, got {value!r}.")

    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind == "float?":
        return None if value is None else _convert(value, "float", path)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "ints":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of integers")
        return tuple(value)
    if kind == "intss":
        if not isinstance(value, (list, tuple)):
            raise bad("a list of integer lists")
        return tuple(_convert(v, "ints", f"{path}[{i}]") for i, v in enumerate(value))
    if kind == "dict":
        if not isinstance(value, dict):
            raise bad("a mapping")
        return value
    raise AssertionError(kind)


def node_args(value: Any, path: str, classes: tuple[str, ...], accepts_extra: bool = False) -> _Args:
    """Arguments of a ``!new:`` node whose class must be one of ``classes``."""
    if not isinstance(value, TaggedNode) or value.kind != "new":
        raise DecoderConfigError(
            f"cosyvoice.yaml: {path} should be a '!new:...{classes[0]}' node, got {value!r}."
        )
    if value.class_name not in classes:
        raise DecoderConfigError(
            f"cosyvoice.yaml: {path} builds class {value.target!r}, which this decoder does not implement "
            f"(supported here: {', '.join(classes)})."
        )
    if value.value in (None, ""):
        return _Args({}, path, accepts_extra)
    if not isinstance(value.value, dict):
        raise DecoderConfigError(f"cosyvoice.yaml: {path} must list its arguments by name (a mapping).")
    return _Args(value.value, path, accepts_extra)


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------
def _mel(data: dict) -> MelConfig:
    if "mel_conf" not in data:
        raise DecoderConfigError("cosyvoice.yaml: mel_conf is missing (the prompt mel settings).")
    a = _Args(_convert(data["mel_conf"], "dict", "mel_conf"), "mel_conf", accepts_extra=False)
    cfg = MelConfig(
        num_mels=a.get("num_mels"), n_fft=a.get("n_fft"), hop_size=a.get("hop_size"),
        win_size=a.get("win_size"), sampling_rate=a.get("sampling_rate"),
        fmin=a.get("fmin", kind="float"), fmax=a.get("fmax", kind="float?"),
    )
    if a.get("center", False, kind="bool"):
        raise DecoderConfigError("cosyvoice.yaml: mel_conf.center = true is not supported (the official value is false).")
    a.finish()
    return cfg


def _encoder(a: _Args) -> EncoderConfig:
    for key, allowed in _SUPPORTED_ENCODER_OPTIONS.items():
        default = {"input_layer": "linear", "pos_enc_layer_type": "rel_pos_espnet",
                   "selfattention_layer_type": "rel_selfattn", "normalize_before": True}[key]
        value = a.get(key, default, kind="bool" if key == "normalize_before" else "str")
        if value not in allowed:
            raise DecoderConfigError(
                f"cosyvoice.yaml: {a.path}.{key} = {value!r} is not supported (only {allowed[0]!r} is implemented)."
            )
    activation = a.get("activation_type", "swish", kind="str")
    if activation not in ACTIVATIONS:
        raise DecoderConfigError(f"cosyvoice.yaml: {a.path}.activation_type {activation!r} is unknown; one of {ACTIVATIONS}.")
    for ignored in ("dropout_rate", "positional_dropout_rate", "attention_dropout_rate"):
        a.get(ignored, 0.0, kind="float")  # inference: dropout is off
    cfg = EncoderConfig(
        input_size=a.get("input_size"),
        output_size=a.get("output_size", 256),
        pre_lookahead_len=a.get("pre_lookahead_len", 3),
        num_blocks=a.get("num_blocks", 6),
        num_up_blocks=a.get("num_up_blocks", 4),
        up_stride=a.get("up_stride", 2),
        up_scale_factor=a.get("up_scale_factor", 2.0, kind="float"),
        attention_heads=a.get("attention_heads", 4),
        linear_units=a.get("linear_units", 2048),
        key_bias=a.get("key_bias", True, kind="bool"),
        activation_type=activation,
    )
    a.finish()
    if cfg.output_size % cfg.attention_heads:
        raise DecoderConfigError(f"cosyvoice.yaml: {a.path}.output_size must be divisible by attention_heads.")
    if cfg.input_size != cfg.output_size:
        raise DecoderConfigError(
            f"cosyvoice.yaml: {a.path}.input_size ({cfg.input_size}) must equal output_size ({cfg.output_size}): "
            "the official up_embed layer maps input_size features of the upsampled output_size states."
        )
    if cfg.up_scale_factor != cfg.up_stride:
        raise DecoderConfigError(f"cosyvoice.yaml: {a.path}.up_scale_factor must equal up_stride.")
    return cfg


def _estimator(a: _Args) -> DiTConfig:
    cfg = DiTConfig(
        in_channels=a.get("in_channels"), out_channels=a.get("out_channels"),
        mlp_ratio=a.get("mlp_ratio", 4.0, kind="float"), depth=a.get("depth", 28),
        num_heads=a.get("num_heads", 8), head_dim=a.get("head_dim", 64), hidden_size=a.get("hidden_size", 256),
    )
    a.finish()
    return cfg


def _flow(data: dict) -> FlowConfig:
    if "flow" not in data:
        raise DecoderConfigError("cosyvoice.yaml: flow is missing (the flow-matching decoder).")
    a = node_args(data["flow"], "flow", (FLOW_CLASS,))
    input_size = a.get("input_size", 512)
    output_size = a.get("output_size", 80)
    spk_embed_dim = a.get("spk_embed_dim", 192)
    output_type = a.get("output_type", "mel", kind="str")
    if output_type != "mel":
        raise DecoderConfigError(f"cosyvoice.yaml: flow.output_type {output_type!r} is not supported (only 'mel').")
    vocab_size = a.get("vocab_size", 5121)
    _, emb = a.node("input_embedding", (EMBEDDING_CLASS,))
    if emb is None:
        raise DecoderConfigError(
            "cosyvoice.yaml: flow.input_embedding is missing; Step-Audio-EditX needs the DualCodebookEmbedding."
        )
    emb_vocab, emb_input = emb.get("vocab_size"), emb.get("input_size")
    emb.finish()
    if emb_input % 2:
        raise DecoderConfigError("cosyvoice.yaml: flow.input_embedding.input_size must be even (two halves).")
    _, enc = a.node("encoder", (ENCODER_CLASS,))
    if enc is None:
        raise DecoderConfigError("cosyvoice.yaml: flow.encoder is missing.")
    enc.accepts_extra = True  # the official encoder takes **kwargs
    encoder = _encoder(enc)
    _, dec = a.node("decoder", (CFM_CLASS,))
    if dec is None:
        raise DecoderConfigError("cosyvoice.yaml: flow.decoder is missing.")
    cfg_rate = dec.get("inference_cfg_rate", 0.7, kind="float")
    _, est = dec.node("estimator", (ESTIMATOR_CLASS,))
    if est is None:
        raise DecoderConfigError("cosyvoice.yaml: flow.decoder.estimator is missing.")
    estimator = _estimator(est)
    dec.finish()
    a.finish()
    if emb_input != encoder.input_size:
        raise DecoderConfigError("cosyvoice.yaml: flow.input_embedding.input_size must equal flow.encoder.input_size.")
    if estimator.out_channels != output_size:
        raise DecoderConfigError("cosyvoice.yaml: flow.decoder.estimator.out_channels must equal flow.output_size.")
    if estimator.in_channels != 4 * output_size:
        raise DecoderConfigError(
            "cosyvoice.yaml: flow.decoder.estimator.in_channels must be 4 x flow.output_size "
            "(noisy mel, encoder mean, speaker and prompt condition are stacked)."
        )
    return FlowConfig(
        input_size=input_size, output_size=output_size, spk_embed_dim=spk_embed_dim, vocab_size=vocab_size,
        embedding_vocab_size=emb_vocab, embedding_input_size=emb_input, encoder=encoder, estimator=estimator,
        inference_cfg_rate=cfg_rate,
    )


def _hift(data: dict) -> HiFTConfig:
    if "hift" not in data:
        raise DecoderConfigError("cosyvoice.yaml: hift is missing (the vocoder).")
    a = node_args(data["hift"], "hift", (HIFT_CLASS,))
    istft = a.get("istft_params", {"n_fft": 16, "hop_len": 4}, kind="dict")
    ia = _Args(istft, "hift.istft_params", accepts_extra=False)
    n_fft, hop_len = ia.get("n_fft"), ia.get("hop_len")
    ia.finish()
    _, f0a = a.node("f0_predictor", (F0_PREDICTOR_CLASS,))
    if f0a is None:
        raise DecoderConfigError("cosyvoice.yaml: hift.f0_predictor is missing (the official vocoder needs one).")
    f0 = F0PredictorConfig(
        num_class=f0a.get("num_class", 1), in_channels=f0a.get("in_channels", 80),
        cond_channels=f0a.get("cond_channels", 512),
    )
    f0a.finish()
    cfg = HiFTConfig(
        in_channels=a.get("in_channels", 80),
        base_channels=a.get("base_channels", 512),
        nb_harmonics=a.get("nb_harmonics", 8),
        sampling_rate=a.get("sampling_rate", 22050),
        nsf_alpha=a.get("nsf_alpha", 0.1, kind="float"),
        nsf_sigma=a.get("nsf_sigma", 0.003, kind="float"),
        nsf_voiced_threshold=a.get("nsf_voiced_threshold", 10.0, kind="float"),
        upsample_rates=a.get("upsample_rates", (8, 8), kind="ints"),
        upsample_kernel_sizes=a.get("upsample_kernel_sizes", (16, 16), kind="ints"),
        istft_n_fft=n_fft,
        istft_hop_len=hop_len,
        resblock_kernel_sizes=a.get("resblock_kernel_sizes", (3, 7, 11), kind="ints"),
        resblock_dilation_sizes=a.get("resblock_dilation_sizes", ((1, 3, 5),) * 3, kind="intss"),
        source_resblock_kernel_sizes=a.get("source_resblock_kernel_sizes", (7, 11), kind="ints"),
        source_resblock_dilation_sizes=a.get("source_resblock_dilation_sizes", ((1, 3, 5),) * 2, kind="intss"),
        lrelu_slope=a.get("lrelu_slope", 0.1, kind="float"),
        audio_limit=a.get("audio_limit", 0.99, kind="float"),
        f0_predictor=f0,
    )
    a.finish()
    n_up = len(cfg.upsample_rates)
    if len(cfg.upsample_kernel_sizes) != n_up:
        raise DecoderConfigError("cosyvoice.yaml: hift.upsample_kernel_sizes needs one entry per upsample rate.")
    if len(cfg.resblock_kernel_sizes) != len(cfg.resblock_dilation_sizes):
        raise DecoderConfigError("cosyvoice.yaml: hift.resblock_kernel_sizes and resblock_dilation_sizes differ in length.")
    if len(cfg.source_resblock_kernel_sizes) < n_up or len(cfg.source_resblock_dilation_sizes) < n_up:
        raise DecoderConfigError("cosyvoice.yaml: hift.source_resblock_* need one entry per upsample rate.")
    if cfg.f0_predictor.num_class != 1:
        raise DecoderConfigError("cosyvoice.yaml: hift.f0_predictor.num_class must be 1 (one f0 track).")
    return cfg


def parse_cosyvoice_config(text: str) -> CosyVoiceConfig:
    """Typed decoder configuration from the text of a ``cosyvoice.yaml``."""
    data = parse_yaml_text(text)
    cfg = CosyVoiceConfig(mel=_mel(data), flow=_flow(data), hift=_hift(data))
    if cfg.hift.in_channels != cfg.flow.output_size or cfg.mel.num_mels != cfg.flow.output_size:
        raise DecoderConfigError("cosyvoice.yaml: mel_conf.num_mels, flow.output_size and hift.in_channels must agree.")
    if cfg.hift.f0_predictor.in_channels != cfg.hift.in_channels:
        raise DecoderConfigError("cosyvoice.yaml: hift.f0_predictor.in_channels must equal hift.in_channels.")
    if cfg.hift.sampling_rate != cfg.mel.sampling_rate:
        raise DecoderConfigError("cosyvoice.yaml: hift.sampling_rate must equal mel_conf.sampling_rate.")
    if cfg.hift.samples_per_frame != cfg.mel.hop_size:
        raise DecoderConfigError(
            f"cosyvoice.yaml: the vocoder makes {cfg.hift.samples_per_frame} samples per mel frame "
            f"(upsample rates x iSTFT hop) but mel_conf.hop_size is {cfg.mel.hop_size}."
        )
    return cfg


def load_cosyvoice_config(path: str | Path) -> CosyVoiceConfig:
    """Typed configuration from ``cosyvoice.yaml`` (a file, or the folder that holds it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    if not path.is_file():
        raise DecoderConfigError(
            f"{path} does not exist. It ships in the {COSYVOICE_SUBDIR} folder of the hub repo "
            f"{HUB_REPO_EDITX}; download the whole model folder."
        )
    return parse_cosyvoice_config(read_model_text(path, HUB_REPO_EDITX))
