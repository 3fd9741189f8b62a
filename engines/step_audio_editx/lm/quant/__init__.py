"""Weight-only int4 / int8 Step1: the compressed-tensors ``pack-quantized`` format, quantizing on load,
``QuantLinear`` and the dequantizing Triton kernels of the fast decode path."""

from .format import (DEFAULT_GROUP_SIZE, SUPPORTED_BITS, QuantFormatError, QuantScheme, dequantize, pack, quantize,
                     scheme_for_columns, unpack)
from .linear import QUANT_TARGETS, QuantLinear, quant_modules, quantize_step1_

__all__ = ["DEFAULT_GROUP_SIZE", "QUANT_TARGETS", "SUPPORTED_BITS", "QuantFormatError", "QuantLinear", "QuantScheme",
           "dequantize", "pack", "quant_modules", "quantize", "quantize_step1_", "scheme_for_columns", "unpack"]
