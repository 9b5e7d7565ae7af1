"""What a `.tflite` file holds, without running it on data."""

import os

from tfcompress import _tflite


def inspect_model(path: "str | os.PathLike") -> dict:
    """Lists a `.tflite` model's inputs, outputs, ops and the dtypes they compute in.

    Args:
        path: The `.tflite` file.

    Returns:
        A dict with `inputs` and `outputs` (name, shape, dtype, scale, zero point),
        `op_counts`, `op_dtypes`, `dtype_counts`, `float_ops`, `fully_int8` and
        `weight_bits` (weight tensors of each integer width: packed int4 ones count as 4).

    Raises:
        ValueError: If the file is missing or not a valid model.
    """
    summary = _tflite.summarize(_tflite.interpreter(path))
    return {
        "path": os.fspath(path),
        "size_bytes": os.path.getsize(path),
        "inputs": [t.to_dict() for t in summary.inputs],
        "outputs": [t.to_dict() for t in summary.outputs],
        "op_counts": summary.op_counts(),
        "op_dtypes": summary.op_dtypes(),
        "dtype_counts": summary.dtype_counts(),
        "float_ops": [o.to_dict() for o in summary.float_compute_ops()],
        "fully_int8": summary.is_integer_only("int8"),
        "weight_bits": {str(k): v for k, v in
                        _tflite.weight_bits(_tflite.read_model(path)).items()},
    }
