"""Every fixed number of the Step-Audio-EditX token layout and audio rates, named once.

The language model shares one vocabulary between text pieces and audio codes: audio code ``c`` of
the vq02 ("linguistic", 16.67 Hz) codebook is id ``AUDIO_TOKEN_OFFSET + c``; audio code ``c`` of the
vq06 ("semantic", 25 Hz) codebook is id ``AUDIO_TOKEN_OFFSET + VQ02_CODEBOOK_SIZE + c``. Every
120 ms of speech is one group of 2 vq02 + 3 vq06 ids.
"""

from __future__ import annotations

# --- sample rates (Hz) -------------------------------------------------------------------------
TOKENIZER_SAMPLE_RATE = 16_000  # vq02, vq06 and the speaker encoder read 16 kHz audio
OUTPUT_SAMPLE_RATE = 24_000  # the decoder prompt mel and the vocoder output are 24 kHz
MIN_INPUT_SAMPLE_RATE = 8_000
MAX_INPUT_SAMPLE_RATE = 192_000

# --- text vocabulary (SentencePiece ids of the official tokenizer.model) ----------------------
TEXT_VOCAB_SIZE = 74_752
PAD_ID = 0  # "<unk>", the official pad
BOS_ID = 1  # "<s>"
EOS_ID = 2  # "</s>"
EOT_ID = 3  # "<|EOT|>": end of a chat turn; generation stops here
BOT_ID = 4  # "<|BOT|>": begin of a chat turn
NEWLINE_ID = 78

# --- audio codes inside the LM vocabulary ------------------------------------------------------
AUDIO_TOKEN_OFFSET = 65_536
VQ02_CODEBOOK_SIZE = 1_024
VQ06_CODEBOOK_SIZE = 4_096
VQ02_FIRST_ID = AUDIO_TOKEN_OFFSET
VQ02_LAST_ID = AUDIO_TOKEN_OFFSET + VQ02_CODEBOOK_SIZE - 1  # 66559
VQ06_FIRST_ID = AUDIO_TOKEN_OFFSET + VQ02_CODEBOOK_SIZE  # 66560
VQ06_LAST_ID = VQ06_FIRST_ID + VQ06_CODEBOOK_SIZE - 1  # 70655

VQ02_PER_GROUP = 2
VQ06_PER_GROUP = 3
TOKENS_PER_GROUP = VQ02_PER_GROUP + VQ06_PER_GROUP  # 5
GROUP_SECONDS = 0.12  # one group covers 120 ms of speech
VQ02_FRAME_RATE = VQ02_PER_GROUP / GROUP_SECONDS  # 16.67 Hz
VQ06_FRAME_RATE = VQ06_PER_GROUP / GROUP_SECONDS  # 25 Hz
AUDIO_TOKENS_PER_SECOND = TOKENS_PER_GROUP / GROUP_SECONDS  # 41.67
SAMPLES_PER_GROUP = round(GROUP_SECONDS * OUTPUT_SAMPLE_RATE)  # 2880 output samples per group

# --- decoder (token2wav) codebook ---------------------------------------------------------------
# The flow's dual-codebook embedding: 1024 vq02 codes + 4096 vq06 codes + 1 vq02 pad.
DECODER_VQ02_PAD = VQ02_CODEBOOK_SIZE  # 1024: column 0 of the third 25 Hz frame of a group
DECODER_CODEBOOK_SIZE = VQ02_CODEBOOK_SIZE + VQ06_CODEBOOK_SIZE + 1  # 5121

# --- input limits ------------------------------------------------------------------------------
MIN_INPUT_SECONDS = 0.5
MAX_INPUT_SECONDS = 30.0
EDIT_INPUT_PEAK = 0.6  # inputs are scaled to this peak before editing (avoids clipping over passes)
