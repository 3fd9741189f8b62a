"""decoder stage of the Step-Audio-EditX data path: LM audio ids -> 24 kHz speech (flow + HiFT)."""

from .config import CosyVoiceConfig, load_cosyvoice_config, parse_cosyvoice_config
from .errors import DecoderConfigError, DecoderWeightsError, Token2WavInputError
from .mel import PromptMelExtractor
from .token2wav import PreparedBatch, Token2Wav, Token2WavInput, Token2WavOutput
from .weights import MissingDecoderFileError

__all__ = [
    "CosyVoiceConfig",
    "DecoderConfigError",
    "DecoderWeightsError",
    "MissingDecoderFileError",
    "PreparedBatch",
    "PromptMelExtractor",
    "Token2Wav",
    "Token2WavInput",
    "Token2WavInputError",
    "Token2WavOutput",
    "load_cosyvoice_config",
    "parse_cosyvoice_config",
]
