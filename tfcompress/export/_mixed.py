"""Post-training int8 with chosen layers at 16-bit activations (a16w8), everything else int8.

The TFLite converter quantizes a whole model to one activation width: from a quantization-
aware graph it refuses a 16-bit tensor next to 8-bit ones (`tfl.max_pool_2d` "input and
output must have same element type"), and its post-training modes take one width for all.
LiteRT's quantizer (`litert-quantizer`, formerly ai-edge-quantizer) quantizes a float
`.tflite` file by per-op recipes instead: every op int8, then the ops of the chosen layers
with int16 activations and int8 weights; it puts QUANTIZE ops (int8 <-> int16) at the
borders. LiteRT, its reference kernels and TFLite Micro run such a file; its input and output
are int8.
"""

import contextlib
import io
import re
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from tfcompress import _tflite
from tfcompress.export._selective import layer_matches


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """The quantizer's calibration bar and its interpreter's debugging warning stay out of
    the user's terminal: tfcompress prints its own lines."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        yield


def quantize_mixed(float_content: bytes, calib: np.ndarray, patterns: Sequence[str]) -> bytes:
    """int8 `.tflite` bytes of the float file `float_content`, calibrated on `calib`, with the
    ops of the layers matching `patterns` (`fnmatch`) at 16-bit activations."""
    try:
        from litert_quantizer import Quantizer, qtyping
    except ImportError:
        raise ValueError("int16_layers needs LiteRT's quantizer, which is not installed: "
                         "pip install 'tfcompress[mixed]'.") from None
    interp = _tflite.interpreter(float_content)
    chosen = sorted({layer for t in interp.get_tensor_details()
                     for layer in _tflite.layer_names_in(t["name"])
                     if layer_matches(layer, patterns)})
    if not chosen:
        raise ValueError(
            f"int16_layers {list(patterns)} match no layer of the model; name Keras layers "
            "(fnmatch patterns allowed), e.g. the ones 'tfcompress debug' lists.")
    every_op = qtyping.TFLOperationName.ALL_SUPPORTED
    quantizer = Quantizer(float_content)
    quantizer.add_static_config(".*", every_op, 8, 8)
    for layer in chosen:  # the ops whose tensors carry the layer's name: `model/layer_1/...`
        quantizer.add_static_config(rf".*/{re.escape(layer)}(_\d+)?/.*", every_op, 16, 8)
    signatures = interp.get_signature_list()
    key = next(iter(signatures))
    (name,) = signatures[key]["inputs"]
    with _quietly():
        ranges = quantizer.calibrate({key: [{name: calib[i : i + 1]}
                                            for i in range(len(calib))]})
        result = quantizer.quantize(ranges, enable_progress_bar=False,
                                    enable_progress_report=False)
    return bytes(result.quantized_model)
