"""Random-weight model folders in the official on-disk layout: tiny (``make-tiny-model``, tests) or full size
(benchmarks).

Every file is written the way the official release stores it (config.json with ``auto_map``,
safetensors with official keys, SentencePiece model, cosyvoice.yaml with its tags, torch-pickled
state dicts, ONNX speaker encoder, FunASR Paraformer folder, k-means centroids), so a tiny folder goes
through exactly the loaders a user's real folder goes through. The weights are random: the audio is
noise, but shapes, token bookkeeping and timings of every stage are real. Used by the tests and for a
smoke run without the 9.7 GB download.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .constants import (
    BOS_ID,
    CAMPPLUS_FILE,
    COSYVOICE_SUBDIR,
    EOS_ID,
    EOT_ID,
    PAD_ID,
    PARAFORMER_SUBDIR,
    TEXT_VOCAB_SIZE,
    VQ02_CENTROIDS_FILE,
    VQ02_CODEBOOK_SIZE,
    VQ06_ONNX_FILE,
    AUDIO_TOKEN_OFFSET,
    SPEAKER_FBANK_BINS,
)
from .asr.random_weights import ASR_YAML, FULL_ASR, TINY_ASR, write_random_asr
from .decoder.random_weights import COSYVOICE_FULL_DIMS, COSYVOICE_TINY_DIMS, write_random_cosyvoice
from .model_files import EDITX_DIRNAME, TOKENIZER_DIRNAME, WEIGHTS_INDEX, ModelFolders

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class RandomModelDims:
    """Widths of every part; an empty dict means the official value (the constructors' defaults)."""

    lm: dict = field(default_factory=dict)  # Step1Config fields
    paraformer: dict = field(default_factory=lambda: dict(FULL_PARAFORMER))  # encoder_conf of config.yaml
    s3: dict = field(default_factory=dict)  # S3Config fields (defaults: the v1 25 Hz tokenizer)
    cosyvoice: dict = field(default_factory=lambda: dict(COSYVOICE_FULL_DIMS))
    speaker_hidden: int = 512
    asr: dict = field(default_factory=lambda: dict(FULL_ASR))  # recogniser: decoder widths and vocabulary


FULL_PARAFORMER = dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=50)
MODEL_SIZES: dict[str, RandomModelDims] = {
    "full": RandomModelDims(),
    # small enough for CI, real in structure
    "tiny": RandomModelDims(
        lm=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_attention_groups=2,
                num_hidden_layers=2),
        paraformer=dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=2),
        s3=dict(n_audio_state=32, n_audio_head=2, n_audio_layer=2),
        cosyvoice=dict(COSYVOICE_TINY_DIMS),
        speaker_hidden=32,
        asr=dict(TINY_ASR),
    ),
}
SPEAKER_EMBED_DIM = 192
LM_SHARD = "model-00001.safetensors"
SPECIAL_PIECES = ("<s>", "</s>", "<|EOT|>", "<|BOT|>")
RESERVED_CONTROL_END = 68  # ids 5..67 are reserved control pieces, as in the official model
BYTE_PIECES_START = RESERVED_CONTROL_END  # <0x00>..<0xFF> at 68..323, so "\n" is <0x0A> = 78
LM_LOGIT_STD = 5.0  # lm_head scale: logits spread enough that sampling is not uniform noise


def _rng(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


# --- Step-Audio-EditX: language model + text tokenizer ---------------------------------------------
def write_sentencepiece_model(path: Path) -> None:
    """A byte-fallback Unigram model with the official id layout of every special piece.

    Ids: 0 <unk>, 1 <s>, 2 </s>, 3 <|EOT|>, 4 <|BOT|>, 5..67 reserved control pieces, 68..323 the 256
    byte pieces, 324 "▁", then printable ASCII; unused ids up to 65535 are control pieces, and
    65536.. are the <audio_N> pieces up to the official vocabulary size.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    model.trainer_spec.vocab_size = TEXT_VOCAB_SIZE
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id = PAD_ID, BOS_ID, EOS_ID
    model.trainer_spec.pad_id = -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.remove_extra_whitespaces = False
    piece = pb.ModelProto.SentencePiece

    def add(text: str, kind: int, score: float = 0.0) -> None:
        p = model.pieces.add()
        p.piece, p.type, p.score = text, kind, score

    add("<unk>", piece.UNKNOWN)
    for special in SPECIAL_PIECES:
        add(special, piece.CONTROL)
    while len(model.pieces) < BYTE_PIECES_START:
        add(f"<|reserved_{len(model.pieces)}|>", piece.CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", piece.BYTE)
    add("\u2581", piece.NORMAL, -2.0)
    for code in range(33, 127):
        add(chr(code), piece.NORMAL, -5.0)
    while len(model.pieces) < AUDIO_TOKEN_OFFSET:
        add(f"<|unused_{len(model.pieces)}|>", piece.CONTROL)
    while len(model.pieces) < TEXT_VOCAB_SIZE:
        add(f"<audio_{len(model.pieces) - AUDIO_TOKEN_OFFSET}>", piece.USER_DEFINED)
    path.write_bytes(model.SerializeToString())


def _write_language_model(editx: Path, dims: dict, seed: int, never_stop: bool = False) -> None:
    from .lm.step1 import Step1Config

    config = Step1Config(**dims, vocab_size=TEXT_VOCAB_SIZE, bos_token_id=BOS_ID, eos_token_id=EOT_ID,
                         pad_token_id=PAD_ID)
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_attention_groups * config.head_dim
    g = _rng(seed, 1)

    # Each tensor goes to bf16 (the official storage dtype) as soon as it is drawn: host memory stays
    # about one copy of the checkpoint even at full size.
    def linear(out_dim: int, in_dim: int, gain: float = 1.0) -> torch.Tensor:
        return (torch.randn(out_dim, in_dim, generator=g) * (gain / math.sqrt(in_dim))).to(torch.bfloat16)

    def norm(dim: int) -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(dim, generator=g)).to(torch.bfloat16)

    tensors = {"model.embed_tokens.weight": torch.randn(TEXT_VOCAB_SIZE, h, generator=g).to(torch.bfloat16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "self_attn.q_proj.weight": linear(h, h, 1.6), p + "self_attn.k_proj.weight": linear(kv, h, 1.6),
            p + "self_attn.v_proj.weight": linear(kv, h), p + "self_attn.o_proj.weight": linear(h, h),
            p + "mlp.gate_proj.weight": linear(f, h), p + "mlp.up_proj.weight": linear(f, h),
            p + "mlp.down_proj.weight": linear(h, f),
            p + "input_layernorm.weight": norm(h), p + "post_attention_layernorm.weight": norm(h),
        })
    tensors["model.norm.weight"] = norm(h)
    tensors["lm_head.weight"] = linear(TEXT_VOCAB_SIZE, h, LM_LOGIT_STD)
    if never_stop:  # <|EOT|> logit 0, the median of the audio logits: never among the top 50 nor the argmax
        tensors["lm_head.weight"][EOT_ID] = 0.0
    save_file(tensors, str(editx / LM_SHARD), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": {k: LM_SHARD for k in sorted(tensors)}}
    (editx / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2))
    official = {
        "architectures": ["Step1ForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_step1.Step1Config",
                     "AutoModelForCausalLM": "modeling_step1.Step1ForCausalLM"},
        "model_type": "step1", "bos_token_id": BOS_ID, "pad_token_id": PAD_ID, "eos_token_id": EOT_ID,
        "hidden_size": h, "intermediate_size": f, "num_attention_heads": config.num_attention_heads,
        "num_attention_groups": config.num_attention_groups, "num_hidden_layers": layers, "max_seq_len": 8192, "vocab_size": TEXT_VOCAB_SIZE, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }
    (editx / "config.json").write_text(json.dumps(official, indent=2))
    write_sentencepiece_model(editx / "tokenizer.model")
    (editx / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>",
        "tokenizer_class": "LlamaTokenizer", "padding_side": "left", "legacy": False,
    }, indent=2))


# --- Step-Audio-EditX: CAM++ speaker encoder --------------------------------------------------------
def write_speaker_onnx(path: Path, seed: int, hidden: int) -> None:
    """input [B, T, 80] -> output [B, 192]: a per-frame MLP, then mean and std pooling and a projection
    (the statistics pooling shape of CAM++, with random weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((SPEAKER_FBANK_BINS, hidden)) / math.sqrt(SPEAKER_FBANK_BINS)).astype(np.float32)
    b1 = (0.02 * rng.standard_normal(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((2 * hidden, SPEAKER_EMBED_DIM)) / math.sqrt(2 * hidden)).astype(np.float32)
    b2 = (0.02 * rng.standard_normal(SPEAKER_EMBED_DIM)).astype(np.float32)
    eps = np.array([1e-5], dtype=np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (eps, "eps"))]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("ReduceMean", ["h"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["h", "h"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["sqmean"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["mean", "mean"], ["mean2"]), helper.make_node("Sub", ["sqmean", "mean2"], ["var0"]),
        helper.make_node("Relu", ["var0"], ["var"]), helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Concat", ["mean", "std"], ["stats"], axis=1),
        helper.make_node("MatMul", ["stats", "w2"], ["o0"]), helper.make_node("Add", ["o0", "b2"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", "T", SPEAKER_FBANK_BINS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", SPEAKER_EMBED_DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


# --- Step-Audio-Tokenizer: Paraformer (vq02) and S3 (vq06) ------------------------------------------
_PARAFORMER_YAML = """\
model: ParaformerStreaming
encoder: SANMEncoderChunkOpt
encoder_conf:
    output_size: {output_size}
    attention_heads: {attention_heads}
    linear_units: {linear_units}
    num_blocks: {num_blocks}
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    attention_dropout_rate: 0.1
    input_layer: pe_online
    pos_enc_class: SinusoidalPositionEncoder
    normalize_before: true
    kernel_size: 11
    sanm_shfit: 0
    selfattention_layer_type: sanm
    chunk_size: [12, 15]
    stride: [8, 10]
    pad_left: [0, 0]
    encoder_att_look_back_factor: [4, 4]
    decoder_att_look_back_factor: [1, 1]
frontend: WavFrontendOnline
frontend_conf:
    fs: 16000
    window: hamming
    n_mels: 80
    frame_length: 25
    frame_shift: 10
    lfr_m: 7
    lfr_n: 6
"""


def _write_am_mvn(path: Path, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shift = -(8.0 + 2.0 * rng.standard_normal(SPEAKER_FBANK_BINS))
    scale = 1.0 / (2.0 + 0.5 * np.abs(rng.standard_normal(SPEAKER_FBANK_BINS)))
    reps = dim // SPEAKER_FBANK_BINS
    fmt = lambda v: " ".join(f"{x:.6f}" for x in np.tile(v, reps))  # noqa: E731
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n"
        "</Nnet>\n"
    )


def _write_tokenizer_folder(tokenizer: Path, dims: RandomModelDims, seed: int) -> None:
    from .frontend.fbank import FbankConfig
    from .frontend.paraformer import SanmEncoderConfig, random_sanm_encoder
    from .frontend.semantic import cache_path_next_to, random_s3tokenizer, save_s3tokenizer

    import yaml

    para = tokenizer / PARAFORMER_SUBDIR
    para.mkdir(parents=True, exist_ok=True)
    enc_dims = {**FULL_PARAFORMER, **dims.paraformer}
    text = _PARAFORMER_YAML.format(**enc_dims) + ASR_YAML.format(width=enc_dims["output_size"], **dims.asr)
    (para / "config.yaml").write_text(text)
    config = yaml.safe_load(text)
    fbank = FbankConfig.from_config(config["frontend_conf"])
    encoder = random_sanm_encoder(SanmEncoderConfig.from_config(config["encoder_conf"], fbank.feature_dim), seed)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update(write_random_asr(para, encoder.cfg.output_size, dims.asr, seed))
    torch.save(state, para / "model.pt")
    _write_am_mvn(para / "am.mvn", fbank.feature_dim, seed)
    (para / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition",
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"token_list": "tokens.json"},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}, indent=2))
    width = encoder.cfg.output_size
    centroids = np.random.default_rng(seed + 2).standard_normal((VQ02_CODEBOOK_SIZE, width))
    np.save(tokenizer / VQ02_CENTROIDS_FILE, centroids.astype(np.float32))
    save_s3tokenizer(random_s3tokenizer(seed=seed + 3, **dims.s3), cache_path_next_to(tokenizer / VQ06_ONNX_FILE))


def write_random_model(out_root: Path, seed: int = 0, size: str = "tiny", never_stop: bool = False) -> ModelFolders:
    """Write ``out_root/Step-Audio-EditX`` and ``out_root/Step-Audio-Tokenizer`` with random weights.

    ``size``: "tiny" (about 25 MB, CPU tests) or "full" (the official dimensions, about 8.5 GB).
    ``never_stop``: the language model never emits <|EOT|>, so every generation runs to its cap
    (benchmarks measure exactly the token counts they ask for).
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"Unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)}.")
    dims = MODEL_SIZES[size]
    out_root = Path(out_root)
    editx, tokenizer = out_root / EDITX_DIRNAME, out_root / TOKENIZER_DIRNAME
    (editx / COSYVOICE_SUBDIR).mkdir(parents=True, exist_ok=True)
    tokenizer.mkdir(parents=True, exist_ok=True)
    _write_language_model(editx, dims.lm, seed, never_stop)
    write_random_cosyvoice(editx / COSYVOICE_SUBDIR, dims.cosyvoice, seed)
    write_speaker_onnx(editx / COSYVOICE_SUBDIR / CAMPPLUS_FILE, seed, dims.speaker_hidden)
    _write_tokenizer_folder(tokenizer, dims, seed)
    folders = ModelFolders(editx.resolve(), tokenizer.resolve()).verify()
    logger.info("Random-weight %s model written to %s", size, out_root)
    return folders


def write_tiny_model(out_root: Path, seed: int = 0) -> ModelFolders:
    """The tiny random model of ``make-tiny-model`` and the tests."""
    return write_random_model(out_root, seed, "tiny")
