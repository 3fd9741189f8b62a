"""The decode-matmul choices are stored per machine, so a seed gives the same kernels (and tokens) after a
restart: round trip, stale and damaged stores, the off switch, and (GPU) no re-timing in a new process."""

from __future__ import annotations

import json

import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_linears, matmul_choice_store
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import (
    CUBLAS,
    ROLES,
    LinearChoice,
    candidates,
)


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "choices" / "decode_matmuls.json"
    monkeypatch.setenv(matmul_choice_store.STORE_ENV, str(path))
    return path


def _valid(rows: int = 1) -> dict[str, list[LinearChoice]]:
    return {role: candidates(role, rows, "auto") for role in ROLES}


def _pick(valid: dict[str, list[LinearChoice]], index: int) -> dict[str, LinearChoice]:
    return {role: options[index % len(options)] for role, options in valid.items()}


def _load(key: str, valid):
    return matmul_choice_store.load(key, valid, decode_linears._choice_from_json)


def _save(key: str, chosen) -> None:
    matmul_choice_store.save(key, chosen, decode_linears._choice_to_json)


def test_every_candidate_survives_the_json_round_trip():
    for rows in (1, 8):
        for role in ROLES:
            for choice in candidates(role, rows, "auto") + candidates(role, rows, "auto", quantized=True):
                assert decode_linears._choice_from_json(decode_linears._choice_to_json(choice)) == choice


def test_stored_choices_come_back_per_key(store):
    valid = _valid()
    first, second = _pick(valid, 3), _pick(valid, 5)
    assert first != second
    key_a = matmul_choice_store.store_key(("H200", "bf16", 1, "auto"))
    key_b = matmul_choice_store.store_key(("H200", "bf16", 8, "auto"))
    assert _load(key_a, valid) is None
    _save(key_a, first)
    _save(key_b, second)
    assert store.is_file()
    assert _load(key_a, valid) == first
    assert _load(key_b, valid) == second
    assert _load(matmul_choice_store.store_key(("H100", "bf16", 1, "auto")), valid) is None


def test_a_choice_that_is_no_longer_a_candidate_is_timed_again(store):
    valid = _valid()
    key = matmul_choice_store.store_key(("GPU", 1))
    chosen = _pick(valid, 2)
    _save(key, chosen)
    stale_role = next(role for role in ROLES if chosen[role] != CUBLAS)
    shrunk = {role: [c for c in options if c != chosen[stale_role]] if role == stale_role else options
              for role, options in valid.items()}
    assert _load(key, shrunk) is None
    assert _load(key, valid) == chosen


def test_a_damaged_store_is_ignored_and_rewritten(store, caplog):
    store.parent.mkdir(parents=True)
    store.write_text("{ not json")
    valid = _valid()
    key = matmul_choice_store.store_key(("GPU", 1))
    with caplog.at_level("WARNING"):
        assert _load(key, valid) is None
    assert "unreadable decode kernel choices" in caplog.text
    _save(key, _pick(valid, 1))
    assert json.loads(store.read_text())["format"] == matmul_choice_store.STORE_FORMAT
    assert _load(key, valid) == _pick(valid, 1)


def test_the_off_switch_neither_reads_nor_writes(tmp_path, monkeypatch):
    monkeypatch.setenv(matmul_choice_store.STORE_ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert matmul_choice_store.store_path() is None
    _save("k", _pick(_valid(), 1))
    assert list(tmp_path.iterdir()) == []


def test_the_default_store_lives_in_the_package_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(matmul_choice_store.STORE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert matmul_choice_store.store_path() == tmp_path / "comfyui_step_audio_editx" / "decode_matmuls.json"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the choice is timed there)")
def test_a_new_process_reuses_the_stored_choice_without_timing(store, monkeypatch, parity):
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import fuse_step1_projections
    from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import load_step1

    weights = fuse_step1_projections(load_step1(parity.editx_dir, device="cuda", dtype="bf16"))
    monkeypatch.setattr(decode_linears, "_CACHE", {})
    first = decode_linears.select_linears(weights, 1, "auto")
    assert store.is_file()

    def no_timing(*args, **kwargs):
        raise AssertionError("the stored choice should have been used")

    monkeypatch.setattr(decode_linears, "_CACHE", {})  # a new process
    monkeypatch.setattr(decode_linears, "_graph_seconds", no_timing)
    assert decode_linears.select_linears(weights, 1, "auto") == first
