"""Integer input and output of a `.tflite` file: from float images to the integers it takes,
and from the integers it returns back to float, with the file's own scale and zero point."""

import os
from typing import Any

import numpy as np

from tfcompress import _tflite


def _details(model: Any, kind: str, index: int) -> dict:
    path = getattr(model, "path", model)  # an ExportReport names its file
    if not isinstance(path, (str, os.PathLike, bytes)):
        raise TypeError(f"model must be a .tflite path, its bytes or an ExportReport, got "
                        f"{type(model).__name__}.")
    interp = _tflite.interpreter(path)
    details = interp.get_input_details() if kind == "input" else interp.get_output_details()
    if not 0 <= index < len(details):
        raise ValueError(f"The model has {len(details)} {kind}(s); index {index} is out of "
                         "range.")
    return details[index]


def quantize_input(x: Any, model: Any, index: int = 0) -> np.ndarray:
    """Float images -> what the model's input takes: `clip(round(x / scale) + zero_point)` in
    its integer type, or `x` as float32 for a float input.

    Args:
        x: Images, preprocessed as for the Keras model (e.g. in `[0, 1]`).
        model: The `.tflite` path, its bytes, or the `ExportReport` of `to_tflite`.
        index: Which input. Defaults to `0`.

    Returns:
        An array of the input's dtype.

    Examples:
        >>> import tempfile, tfcompress as tfc
        >>> path = tempfile.mkdtemp() + "/m.tflite"
        >>> report = tfc.export.to_tflite(tfc.reference.reference_cnn(), path, "int8",
        ...                               tfc.data.load("mnist"), integer_io=True)
        >>> q = quantize_input(np.ones((1, 28, 28, 1), "float32"), report)
        >>> q.dtype.name, int(q.max())
        ('int8', 127)
    """
    return _tflite.quantize_input(np.asarray(x, dtype=np.float32), _details(model, "input",
                                                                            index))


def dequantize_output(y: Any, model: Any, index: int = 0) -> np.ndarray:
    """What the model's output returns -> float: `(q - zero_point) * scale` (float outputs are
    returned as float32).

    Args:
        y: The output tensor's values.
        model: The `.tflite` path, its bytes, or the `ExportReport` of `to_tflite`.
        index: Which output. Defaults to `0`.

    Returns:
        A float32 array.
    """
    return _tflite.dequantize_output(np.asarray(y), _details(model, "output", index))
