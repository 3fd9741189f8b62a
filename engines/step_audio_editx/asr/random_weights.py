"""Random-weight recogniser parts (CIF predictor, decoder, tokens.json) for the Paraformer folder that
``tiny_models`` writes, in the official layout, so transcription runs through the real loaders."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .model import CifConfig, CifPredictor, DecoderConfig, ParaformerDecoder, randomize_

FULL_ASR = dict(decoder_heads=4, decoder_units=2048, decoder_blocks=16, vocab_size=8501)
TINY_ASR = dict(decoder_heads=2, decoder_units=64, decoder_blocks=2, vocab_size=96)
ALPHA_BIAS = -0.4  # predictor output bias: about one token per 2-3 frames (150 ms), speech-like
SPECIALS = ("<blank>", "<s>", "</s>")
UNK = "<unk>"
_WORDS = ("the", "a", "to", "and", "of", "it", "is", "that", "you", "we", "edit", "voice", "time", "good",
          "i", "s", "t", "don't", "o", "k")
_PIECES = ("re@@", "un@@", "in@@", "ex@@", "st@@", "pro@@", "com@@", "con@@")
_CJK_FIRST = 0x4E00

ASR_YAML = """\
predictor: CifPredictorV2
predictor_conf:
    idim: {width}
    threshold: 1.0
    l_order: 1
    r_order: 1
    tail_threshold: 0.45
decoder: ParaformerSANMDecoder
decoder_conf:
    attention_heads: {decoder_heads}
    linear_units: {decoder_units}
    num_blocks: {decoder_blocks}
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    self_attention_dropout_rate: 0.1
    src_attention_dropout_rate: 0.1
    att_layer_num: {decoder_blocks}
    kernel_size: 11
    sanm_shfit: 5
model_conf:
    ctc_weight: 0.0
    lsm_weight: 0.1
    length_normalized_loss: true
    predictor_weight: 1.0
    predictor_bias: 1
    sampling_ratio: 0.75
tokenizer: CharTokenizer
tokenizer_conf:
    unk_symbol: <unk>
    split_with_space: true
"""


def synthetic_tokens(size: int) -> list[str]:
    """A token list shaped like the real one: specials, English words and ``@@`` pieces, digits, CJK, ``<unk>``."""
    body = list(_WORDS) + list(_PIECES) + [str(d) for d in range(10)]
    body = body[: max(size - len(SPECIALS) - 1, 0) // 2]
    cjk = size - len(SPECIALS) - 1 - len(body)
    return list(SPECIALS) + body + [chr(_CJK_FIRST + k) for k in range(cjk)] + [UNK]


def write_random_asr(para: Path, width: int, dims: dict, seed: int) -> dict[str, torch.Tensor]:
    """Write tokens.json and return the ``predictor.*`` and ``decoder.*`` tensors for model.pt."""
    tokens = synthetic_tokens(int(dims["vocab_size"]))
    (para / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False, indent=1), encoding="utf-8")
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    predictor = randomize_(CifPredictor(CifConfig(idim=width)), gen)
    with torch.no_grad():
        predictor.cif_output.bias.fill_(ALPHA_BIAS)
    decoder = randomize_(ParaformerDecoder(DecoderConfig(
        vocab_size=len(tokens), width=width, attention_heads=int(dims["decoder_heads"]),
        linear_units=int(dims["decoder_units"]), num_blocks=int(dims["decoder_blocks"]),
        att_layer_num=int(dims["decoder_blocks"]))), gen)
    state = {f"predictor.{k}": v for k, v in predictor.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    return state


def add_random_asr(para: Path, dims: dict, seed: int = 0) -> bool:
    """Give a Paraformer folder written without the recogniser (older random models) random predictor,
    decoder and tokens, in place. Returns False when it already has them."""
    import yaml

    state = torch.load(para / "model.pt", map_location="cpu", weights_only=True)
    if any(k.startswith("decoder.") for k in state):
        return False
    config = yaml.safe_load((para / "config.yaml").read_text(encoding="utf-8"))
    width = int(config["encoder_conf"]["output_size"])
    state.update(write_random_asr(para, width, dims, seed))
    text = (para / "config.yaml").read_text(encoding="utf-8").rstrip("\n") + "\n" + ASR_YAML.format(width=width, **dims)
    for name, content in (("config.yaml", text),):
        (para / name).unlink()  # a hard-linked copy must not change its source
        (para / name).write_text(content, encoding="utf-8")
    (para / "model.pt").unlink()
    torch.save(state, para / "model.pt")
    return True
