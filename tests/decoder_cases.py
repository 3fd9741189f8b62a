"""What the decoder tests share: three clips of the parity fixture's token2wav inputs with different
generated and prompt lengths (and speakers), for padded batches."""

from __future__ import annotations

import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.token2wav import Token2WavInput


def decoder_clips(parity, gen_lengths: tuple[int, int, int]) -> list[Token2WavInput]:
    """Three clips of different generated AND prompt lengths (and speakers) from the fixture inputs."""
    z = parity.npz("token2wav")
    gen = z["generated_ids_with_offsets"].tolist()
    prompt = z["prompt_vq0206_with_offsets"].tolist()
    mel = torch.from_numpy(z["prompt_mel"])
    spk = torch.from_numpy(z["prompt_spk_embedding"])
    short_prompt = prompt[: C.TOKENS_PER_GROUP * max(1, len(prompt) // (2 * C.TOKENS_PER_GROUP))]
    n0, n1, n2 = (min(n, len(gen) - 2) for n in gen_lengths)
    return [
        Token2WavInput(gen[:n0], prompt, mel, spk),
        Token2WavInput(gen[:n1], prompt, mel, spk.flip(0)),
        Token2WavInput(gen[2: 2 + n2], short_prompt, mel[: mel.shape[0] // 2 + 1], spk),
    ]
