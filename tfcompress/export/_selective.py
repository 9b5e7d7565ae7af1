"""Post-training int8 with chosen layers left in float (selective quantization).

The converter's public options quantize every op that has an int8 kernel. TensorFlow's own
quantization debugger keeps ops in float by converting in two stages: calibrate only, then
quantize the calibrated model with a list of tensors to leave alone (`denylisted_nodes`). Its
public wrapper (`tf.lite.experimental.QuantizationDebugger`) also builds a NumericVerify debug
model, which fails in TF 2.21 ("Please check if the quantized model is in debug mode"), so this
module calls the two stages it is made of: the converter's `_experimental_calibrate_only` and
`tensorflow.lite.python.convert.mlir_quantize`. This is the only place tfcompress uses them;
`tests/export/test_selective.py` pins what it relies on (a denylisted layer comes out as a
float op between DEQUANTIZE and QUANTIZE, everything else int8).

A quantization-aware model cannot be handled this way: its fake-quant ops fix every tensor's
range, and the converter quantizes a layer between two of them whatever the denylist says.
"""

import fnmatch
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfcompress import _tflite


def layer_matches(layer: str, patterns: Sequence[str]) -> bool:
    """True when the Keras layer name `layer` matches one of the `fnmatch` `patterns`."""
    return any(fnmatch.fnmatchcase(layer, p) for p in patterns)


def tensor_matches(tensor_name: str, patterns: Sequence[str]) -> bool:
    """True when a TFLite tensor comes from a layer matching one of `patterns`."""
    return any(layer_matches(part, patterns) for part in _tflite.layer_names_in(tensor_name))


def quantize_with_float_layers(converter: Any, calib: np.ndarray, patterns: Sequence[str],
                               integer_io: bool, output_layers: Sequence[str] = ()) -> bytes:
    """int8 `.tflite` bytes from a configured post-training `converter` (optimizations and
    representative dataset set), with the layers matching `patterns` kept in float.
    `output_layers` names the layer behind each model output: the converter names output
    tensors after the signature, not the layer."""
    from tensorflow.lite.python import convert as tflite_convert

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    interp = _tflite.interpreter(calibrated)
    tensors = [t["name"] for t in interp.get_tensor_details()]
    denied = [t for t in tensors if tensor_matches(t, patterns)]
    for detail, layer in zip(interp.get_output_details(), output_layers, strict=False):
        if layer_matches(layer, patterns):
            denied.append(detail["name"])
    if not denied:
        raise ValueError(
            f"float_layers {list(patterns)} match no layer of the model; name Keras layers "
            "(fnmatch patterns allowed), e.g. the ones 'tfcompress debug' lists.")
    return tflite_convert.mlir_quantize(calibrated, fully_quantize=integer_io,
                                        denylisted_nodes=denied)
