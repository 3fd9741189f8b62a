"""TextTokenizer: official ids from the sentencepiece library (no transformers tokenizer classes).

The model file is the real official tokenizer.model shipped in the parity fixture set; reference ids
are read from the set at test time.
"""

from __future__ import annotations

import time

import pytest
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.codes import audio_token_string
from comfyui_step_audio_editx.engines.step_audio_editx.text_tokenizer import (
    HUB_REPO_ID,
    TextTokenizer,
    TokenizerError,
    TokenizerFileMissing,
)


@pytest.fixture(scope="module")
def tok(parity) -> TextTokenizer:
    return TextTokenizer.from_folder(parity.editx_dir)


@pytest.mark.parity
@pytest.mark.parametrize("layout", ["prompts_new", "prompts_old"])
def test_official_prompt_ids_and_pieces(parity, tok, layout):
    ref = parity.json(layout)
    assert ref["cases"], layout
    for name, case in ref["cases"].items():
        text = case["rendered"] if "rendered" in case else tok.decode(case["ids"])
        assert tok.encode(text) == case["ids"], (layout, name)
        assert tok.encode_pieces(text) == case["tokens"], (layout, name)
        assert tok.decode(case["ids"]) == text, (layout, name)


@pytest.mark.parity
def test_audio_token_string_ids_match_official(parity, tok):
    ref = parity.json("interleave_reshape")
    checked = 0
    for name, case in ref["cases"].items():
        if "token_str" in case:
            assert tok.encode(case["token_str"]) == case["token_str_ids"], name
            checked += 1
    assert checked, "no token_str case in interleave_reshape.json"


def test_special_pieces_map_to_constants(tok):
    assert tok.piece_to_id("<s>") == C.BOS_ID
    assert tok.piece_to_id("</s>") == C.EOS_ID
    assert tok.piece_to_id("<|EOT|>") == C.EOT_ID
    assert tok.piece_to_id("<|BOT|>") == C.BOT_ID
    assert tok.piece_to_id("<0x0A>") == C.NEWLINE_ID
    assert tok.piece_to_id("<audio_0>") == C.AUDIO_TOKEN_OFFSET
    assert tok.piece_to_id(f"<audio_{C.VQ06_LAST_ID - C.AUDIO_TOKEN_OFFSET}>") == C.VQ06_LAST_ID
    assert tok.vocab_size == C.TEXT_VOCAB_SIZE
    assert tok.is_special(C.BOT_ID) and tok.is_special(C.AUDIO_TOKEN_OFFSET) and not tok.is_special(C.NEWLINE_ID)


def test_specials_are_split_out_of_text(tok):
    assert tok.encode("<|BOT|> human\n") == [C.BOT_ID, tok.piece_to_id("▁human"), C.NEWLINE_ID]
    assert tok.encode_pieces("<<s>>") == ["<", "<s>", ">"]
    assert tok.encode("<audio_5><audio_7>") == [C.AUDIO_TOKEN_OFFSET + 5, C.AUDIO_TOKEN_OFFSET + 7]
    # Not a piece of the model: stays text.
    assert C.BOS_ID not in tok.encode("<b>bold</b>")
    assert tok.find_special_pieces("a <|EOT|> b <audio_3> <b>") == ["<|EOT|>", "<audio_3>"]


def test_no_dummy_prefix_and_whitespace_kept(tok):
    pieces = tok.encode_pieces("Hello world")
    assert not pieces[0].startswith("\u2581")  # no "▁" prepended to the first span
    assert pieces[-1] == "\u2581world"
    assert tok.encode_pieces("  a") == ["\u2581", "\u2581a"]  # runs of spaces survive


@pytest.mark.parametrize(
    "text",
    ["  a  b\n\n c ", "Hello \U0001F44B world", "日本語のテキスト", "안녕하세요", "<|BOT|>hi<audio_5>", "a<b>c", "\t tab",
     "我觉得这个主意很好，[Laughter]我们明天就开始吧。"],
)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_long_audio_strings_are_fast_and_exact(tok):
    ids = [C.AUDIO_TOKEN_OFFSET + (i * 7) % (C.VQ02_CODEBOOK_SIZE + C.VQ06_CODEBOOK_SIZE) for i in range(50_000)]
    text = "x\n" + audio_token_string(ids) + "\n"
    t0 = time.perf_counter()
    out = tok.encode(text)
    elapsed = time.perf_counter() - t0
    assert out[2:-1] == ids and out[1] == C.NEWLINE_ID and out[-1] == C.NEWLINE_ID
    assert elapsed < 1.0, f"encoding 50k audio pieces took {elapsed:.2f} s"


def test_missing_tokenizer_file_names_folder_file_and_hub_repo(tmp_path):
    with pytest.raises(TokenizerFileMissing) as info:
        TextTokenizer.from_folder(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "tokenizer.model" in message and HUB_REPO_ID in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)


def test_bad_files_are_rejected(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x00not a sentencepiece model\xff" * 3)
    with pytest.raises(TokenizerError):
        TextTokenizer.from_folder(tmp_path)


def test_unknown_pieces_and_ids_raise(tok):
    with pytest.raises(TokenizerError):
        tok.piece_to_id("definitely-not-a-piece-\u2603\u2603")
    with pytest.raises(TokenizerError):
        tok.decode([tok.vocab_size])
    with pytest.raises(TokenizerError):
        tok.id_to_piece(-1)
