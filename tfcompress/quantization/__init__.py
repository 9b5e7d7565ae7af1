"""Quantization-aware training for Keras 3, exported as integer-only TFLite."""

from tfcompress.quantization._layers import (
    ActivationQuantizer,
    QuantConv,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantScalarOp,
)
from tfcompress.quantization._transform import (
    calibrate,
    check_ranges_learned,
    is_quantize_aware,
    quantize_aware,
    register_layer,
    supported_layers,
)

__all__ = [
    "ActivationQuantizer",
    "QuantConv",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantScalarOp",
    "calibrate",
    "check_ranges_learned",
    "is_quantize_aware",
    "quantize_aware",
    "register_layer",
    "supported_layers",
]
