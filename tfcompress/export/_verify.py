"""The verification stage of `to_tflite`: every op of an integer file computes in integers
(except the layers asked for in float), and the file agrees with the Keras model on the
target's own runtime."""

from typing import Any

import numpy as np

from tfcompress import _tflite
from tfcompress._targets import Target
from tfcompress.export._convert import INTEGER_MODES, calibration_arrays


def check_float_ops(model: Any, summary: "_tflite.GraphSummary", quantization: str,
                    float_layers: list | None, allow_float: bool) -> tuple:
    """The ops of the file that compute in float; raises when an integer file has one that
    was not asked for (`float_layers`) or accepted (`allow_float`)."""
    float_ops = summary.float_compute_ops()
    unasked = float_ops
    if float_layers:  # the float ops asked for are not an error; any other one is
        from tfcompress._graph import output_names
        from tfcompress.export._selective import layer_matches, tensor_matches

        outputs = {d.name for d, layer in zip(summary.outputs, output_names(model),
                                              strict=False)
                   if layer_matches(layer, float_layers)}
        unasked = [o for o in float_ops if not tensor_matches(o.output_name, float_layers)
                   and o.output_name not in outputs]
        allow_float = not unasked
    if quantization in INTEGER_MODES and unasked and not allow_float:
        listed = "; ".join(
            f"{o.op} ({'/'.join(o.output_dtypes)}) from layer {o.layer!r}" for o in unasked
        )
        raise ValueError(
            f"The {quantization} model would still compute in float: {listed}. Nothing was "
            "written. Replace or remove those layers, export as 'dynamic' or 'float16', or "
            "accept them with allow_float=True (on the command line --allow-float)."
        )
    return tuple(float_ops)


def agreement(model: Any, content: bytes, data: Any, target: Target, limit: int = 200,
              postprocess: Any = None) -> tuple[float, int]:
    """Top-1 agreement between the Keras model and the file run on `target`: along the last
    axis of every output (per pixel...), the lowest over the outputs; for a detector, the
    share of images whose detections are the same (`tfcompress.detection.same_detections`)."""
    from tfcompress.detection import (
        anchors_of,
        detection_agreement,
        file_detections,
        same_detections,
    )

    x = calibration_arrays(data, limit)
    if postprocess is not None:  # the file's own detections against the model's, decoded alike
        mine = postprocess.detections(model.predict(x, batch_size=64, verbose=0),
                                      anchors_of(model))
        theirs = file_detections(_tflite.interpreter(content, target=target.name), x)
        return float(np.mean([same_detections(a, b) for a, b in zip(
            _confident(mine), _confident(theirs), strict=True)])), len(x)
    keras_out = model.predict(x, batch_size=64, verbose=0)
    keras_out = keras_out if isinstance(keras_out, (list, tuple)) else [keras_out]
    shapes = [tuple(np.shape(o)[1:]) for o in keras_out]
    file_out = _tflite.run_all(_tflite.interpreter(content, target=target.name), x, shapes)
    anchors = anchors_of(model)
    if anchors is not None:
        return detection_agreement(keras_out[0], file_out[0], anchors), len(x)
    first = np.argmax(keras_out[0], -1).ravel()
    if len(x) > 1 and np.shape(keras_out[0])[-1] > 1 and np.all(first == first[0]):
        import warnings

        warnings.warn(
            f"The agreement is measured on {len(x)} images that the Keras model all puts in "
            f"class {int(first[0])}, so it says nothing: check that the images reach the "
            "model in its range (--input-range; Python: preprocessing=).", stacklevel=3)
    scores = [float(np.mean(np.argmax(k, -1) == np.argmax(f, -1)))
              for k, f in zip(keras_out, file_out, strict=True) if np.shape(k)[-1] > 1]
    return (min(scores) if scores else 1.0), len(x)


def _confident(found: list, threshold: float = 0.3) -> list:
    """Detections above `threshold` (those a deployment shows): low-score ones near the
    threshold come and go with rounding."""
    from tfcompress.detection import Detections

    return [Detections(d.boxes[d.scores > threshold], d.classes[d.scores > threshold],
                       d.scores[d.scores > threshold]) for d in found]
