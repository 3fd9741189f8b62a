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
# The official repetition guard (local sampler and the vLLM plugin): ban the last id when it occurs more than
# REPETITION_MAX_COUNT times in the last REPETITION_WINDOW ids.
REPETITION_WINDOW = 10
REPETITION_MAX_COUNT = 1
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
MAX_INPUT_SECONDS = 30.0  # per model call; longer edit inputs are cut into pieces of at most this
MAX_LONG_INPUT_SECONDS = 1200.0  # long-form edits: 20 minutes
EDIT_INPUT_PEAK = 0.6  # inputs are scaled to this peak before editing (avoids clipping over passes)

# --- audio front end: official preprocess_wav, Paraformer vq02, S3 vq06, CAM++ ------------------
SILENT_PEAK = 1.0 / 32768  # a clip whose peak stays below one 16-bit step is all-silent
PEAK_NORM_TARGET = 0.999  # official energy_norm_fn: peak -> 0.999 ...
PEAK_NORM_FLOOR = 0.01  # ... dividing by at least 0.01, so quiet clips are not blown up
TRIM_TOP_DB = 20.0  # librosa.effects.trim: frames quieter than the loudest by this much are silence
TRIM_FRAME_LENGTH = 512
TRIM_HOP_LENGTH = 128
TRIM_AMIN = 1e-5  # librosa amplitude_to_db floor
TRIM_KEEP_LEFT_SECONDS = 0.05  # silence kept before the speech
TRIM_KEEP_RIGHT_SECONDS = 0.22  # silence kept after the speech
TRIM_ROUND_SAMPLES = 240  # the speech span is rounded up to a multiple of this (15 ms at 16 kHz)

KALDI_WAVE_SCALE = 32768.0  # the Paraformer fbank reads int16-scaled samples; CAM++ reads them unscaled
PARAFORMER_SUBDIR = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
VQ02_CENTROIDS_FILE = "linguistic_tokenizer.npy"
PARAFORMER_CHUNK_SIZE = (0, 4, 5)  # official StepAudioTokenizer: (left, chunk, overlap) in LFR frames
PARAFORMER_ENCODER_LOOK_BACK = 4  # chunks of cached keys/values each encoder layer attends to
PARAFORMER_SAMPLES_PER_CHUNK_UNIT = 960  # FunASR: chunk stride = chunk_size[1] * 960 samples (240 ms)
PARAFORMER_MIN_TAIL_SAMPLES = 480  # a final chunk this short that yields no frame is skipped

VQ06_ONNX_FILE = "speech_tokenizer_v1.onnx"
VQ06_MODEL_NAME = "speech_tokenizer_v1_25hz"  # the name of the 25 Hz v1 tokenizer (cache metadata)
VQ06_CHUNK_SECONDS = 30  # official get_vq06_code cuts audio into 30 s pieces ...
VQ06_MIN_CHUNK_SAMPLES = 480  # ... and drops pieces shorter than 30 ms
VQ06_MEL_HOP = 160  # whisper log-mel hop at 16 kHz (100 frames/s)
VQ06_MAX_CODE_DRIFT = 2  # official assert: |codes - 25 * seconds| <= 2 per piece
VQ06_V1_HEADS = 20  # attention heads of the v1 tokenizer (not visible in the ONNX weight shapes)

COSYVOICE_SUBDIR = "CosyVoice-300M-25Hz"
CAMPPLUS_FILE = "campplus.onnx"
SPEAKER_FBANK_BINS = 80  # CAM++ input: kaldi fbank, 80 bins, dither 0, time mean removed

# --- official model files (hub layout) ----------------------------------------------------------
HUB_REPO_EDITX = "stepfun-ai/Step-Audio-EditX"  # LM + tokenizer.model + CosyVoice-300M-25Hz/
HUB_REPO_EDITX_AWQ = "stepfun-ai/Step-Audio-EditX-AWQ-4bit"  # the LM in 4 bits (compressed-tensors)
AWQ_DIRNAME = "Step-Audio-EditX-AWQ-4bit"  # its folder under models/TTS (the hub name)
QUANTIZE_CHOICES: tuple[str, ...] = ("none", "int8", "int4")  # weights quantized on load from bf16
OFFLOAD_CHOICES: tuple[str, ...] = ("auto", "on", "off")  # EngineConfig.offload_frontend / --offload-frontend
HUB_REPO_TOKENIZER = "stepfun-ai/Step-Audio-Tokenizer"  # vq02 Paraformer + vq06 ONNX + centroids
MODEL_CONFIG_FILE = "config.json"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
SAFETENSORS_SINGLE_FILE = "model.safetensors"

# --- Step1 attention (sqrt-ALiBi) ---------------------------------------------------------------
# Slopes: n = 2^floor(log2(H)); 2^(-ALIBI_SLOPE_BASE_EXP*k/n) for k = 1..n, then, for H > n,
# 2^(-ALIBI_SLOPE_EXTRA_EXP*m/n) for odd m (facts doc section 2).
ALIBI_SLOPE_BASE_EXP = 8.0
ALIBI_SLOPE_EXTRA_EXP = 4.0
# Dense bias buffers get their key dimension padded to a multiple of this many elements, so that the
# memory-efficient SDPA and xformers kernels can read them without a per-layer aligned copy.
ATTN_BIAS_ALIGNMENT = 8
# transformers renamed from_pretrained's torch_dtype= to dtype= in this version.
TRANSFORMERS_DTYPE_KWARG_VERSION = "4.56"

# --- how the model runs (the choices of the Engine node and the CLI; torch-free so --help is instant) ------
ATTENTION_CHOICES: tuple[str, ...] = ("auto", "flash_attention_2", "xformers", "sdpa", "flex_attention", "eager")
DTYPE_CHOICES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")

# --- decoder (token2wav) run settings -----------------------------------------------------------
DECODER_CFM_STEPS = 10  # Euler steps of the flow matching (official CosyVoice(n_timesteps=10))

# --- language model context ----------------------------------------------------------------------
MAX_CONTEXT_TOKENS = 8_192  # the official pipeline's max_length / max_model_len (prompt + new tokens)

# --- transcription (the Paraformer's own CIF predictor + decoder, FunASR's streaming defaults) -------
ASR_CHUNK_SIZE = (0, 10, 5)  # FunASR's paraformer-streaming example: 600 ms chunks, 300 ms look-ahead
ASR_ENCODER_LOOK_BACK = 4  # chunks of cached encoder keys/values
ASR_DECODER_LOOK_BACK = 1  # chunks of cached decoder memory
ASR_TAIL_CHUNK_SAMPLES = 960  # FunASR: a final chunk shorter than this decodes only the cached look-ahead
ASR_SPEECH_ALPHA = 0.1  # a frame whose CIF weight is below this counts as silence before a token starts
