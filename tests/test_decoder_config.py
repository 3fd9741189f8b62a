"""cosyvoice.yaml reader: values read by key without executing tags, clear errors for bad files."""

from __future__ import annotations

import math
import re

import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.config import (
    CONFIG_FILENAME,
    load_cosyvoice_config,
    parse_cosyvoice_config,
)
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.errors import DecoderConfigError
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.yaml_nodes import TaggedNode, parse_yaml_text

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def yaml_text(parity) -> str:
    return (parity.editx_dir / "CosyVoice-300M-25Hz" / CONFIG_FILENAME).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def flow_state(parity) -> dict:
    return torch.load(parity.editx_dir / "CosyVoice-300M-25Hz" / "flow.pt", map_location="cpu", weights_only=True)


def test_dims_agree_with_the_checkpoint(yaml_text, flow_state):
    cfg = parse_cosyvoice_config(yaml_text)
    emb = flow_state["input_embedding.embedding.weight"]
    assert tuple(emb.shape) == (cfg.flow.embedding_vocab_size, cfg.flow.embedding_input_size // 2)
    assert flow_state["encoder.embed.out.0.weight"].shape[0] == cfg.flow.encoder.output_size
    assert flow_state["encoder.encoders.0.feed_forward.w_1.weight"].shape[0] == cfg.flow.encoder.linear_units
    blocks = {k.split(".")[3] for k in flow_state if k.startswith("decoder.estimator.blocks.")}
    assert len(blocks) == cfg.flow.estimator.depth
    assert flow_state["decoder.estimator.in_proj.weight"].shape == (cfg.flow.estimator.hidden_size,
                                                                     cfg.flow.estimator.in_channels)
    assert cfg.mel.hop_size == cfg.hift.samples_per_frame == math.prod(cfg.hift.upsample_rates) * cfg.hift.istft_hop_len
    # Official timing: a vq06 token is 40 ms (25 Hz) of 24 kHz audio, so a 5-id group (3 vq06 frames) is
    # 120 ms = 2,880 samples; the config's up_stride x hop must reproduce it.
    assert cfg.samples_per_token_frame == 24000 // 25 == 960
    assert 3 * cfg.samples_per_token_frame == C.SAMPLES_PER_GROUP == 2880


def test_tags_stay_inert_and_refs_resolve():
    text = """
dims: 6
nested: {a: 3}
danger: !apply:os.system ["echo pwned"]
thing: !new:some.module.Thing
    width: !ref <dims>
    double: !ref <dims> * 2
    deep: !ref <nested[a]>
    fn: !name:some.module.func
"""
    data = parse_yaml_text(text)
    assert isinstance(data["danger"], TaggedNode) and data["danger"].kind == "apply"
    assert data["danger"].target == "os.system"
    thing = data["thing"]
    assert thing.kind == "new" and thing.class_name == "Thing"
    assert thing.value["width"] == 6 and thing.value["double"] == 12 and thing.value["deep"] == 3
    assert isinstance(thing.value["fn"], TaggedNode) and thing.value["fn"].kind == "name"


def test_unknown_class_is_named(yaml_text):
    bad = yaml_text.replace("flow.decoder_dit.DiT", "flow.decoder.ConditionalDecoder")
    assert bad != yaml_text
    with pytest.raises(DecoderConfigError, match="ConditionalDecoder") as err:
        parse_cosyvoice_config(bad)
    assert "flow.decoder.estimator" in str(err.value)


@pytest.mark.parametrize("key,path", [("hop_size:", "mel_conf.hop_size"), ("in_channels: 320", "flow.decoder.estimator.in_channels")])
def test_missing_key_is_named(yaml_text, key, path):
    lines = [line for line in yaml_text.splitlines() if not line.strip().startswith(key)]
    assert len(lines) == len(yaml_text.splitlines()) - 1
    with pytest.raises(DecoderConfigError, match=path.replace(".", r"\.")):
        parse_cosyvoice_config("\n".join(lines))


def test_unexpected_argument_and_bad_values(yaml_text):
    with pytest.raises(DecoderConfigError, match="bogus"):
        parse_cosyvoice_config(yaml_text.replace("  nb_harmonics:", "  bogus: 1\n  nb_harmonics:", 1))
    with pytest.raises(DecoderConfigError, match="hift.base_channels should be an integer"):
        parse_cosyvoice_config(re.sub(r"(?m)^(\s*base_channels:).*$", r"\1 wide", yaml_text))
    with pytest.raises(DecoderConfigError, match="YAML"):
        parse_cosyvoice_config("mel_conf: [unclosed")
    with pytest.raises(DecoderConfigError, match="hift is missing"):
        parse_cosyvoice_config(yaml_text.split("\nhift:")[0])


def test_missing_file_names_the_hub_repo(tmp_path):
    with pytest.raises(DecoderConfigError, match="stepfun-ai/Step-Audio-EditX"):
        load_cosyvoice_config(tmp_path)
