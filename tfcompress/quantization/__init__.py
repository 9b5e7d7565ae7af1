"""Quantization-aware training for Keras 3, exported as integer-only TFLite."""

from tfcompress.quantization._calibrate import METHODS, calibrate_ranges
from tfcompress.quantization._fit import QatResult, train_quantized
from tfcompress.quantization._layers import (
    ActivationQuantizer,
    QuantConv,
    QuantConvTranspose,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantScalarOp,
)
from tfcompress.quantization._strip import strip_fake_quant
from tfcompress.quantization._transform import (
    check_ranges_learned,
    count_params,
    float_layer_names,
    is_quantize_aware,
    quantize_aware,
    register_layer,
    supported_layers,
)

__all__ = [
    "METHODS",
    "ActivationQuantizer",
    "QuantConv",
    "QuantConvTranspose",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QatResult",
    "QuantScalarOp",
    "calibrate_ranges",
    "check_ranges_learned",
    "count_params",
    "float_layer_names",
    "is_quantize_aware",
    "quantize_aware",
    "register_layer",
    "strip_fake_quant",
    "supported_layers",
    "train_quantized",
]
