"""Reading a `.tflite` file in the LiteRT interpreter: tensors, ops and the dtypes they run in.

Shared by the exporter (to verify what it wrote), the benchmark and `inspect`.
"""

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Ops that only move data between float and integer at the model's edges.
_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
_INT_ACTIVATION_DTYPES = {"int8": ("int8", "uint8"), "int16x8": ("int16",)}


def interpreter(model: "str | os.PathLike | bytes", num_threads: int = 1):
    """Creates an allocated LiteRT interpreter for a `.tflite` path or its bytes."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, bytes):
        what, kwargs = "the converted model", {"model_content": model}
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ValueError(f"No .tflite file at {path}. Check the path, or export one first.")
        what, kwargs = path, {"model_path": path}
    try:
        interp = Interpreter(num_threads=num_threads, **kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"{what} is not a valid .tflite model that LiteRT can run ({detail})."
                         ) from None
    return interp


def layer_of(tensor_name: str) -> str:
    """Guesses the Keras layer a TFLite tensor came from (`model_1/conv1_1/Relu` -> `conv1`)."""
    first = tensor_name.split(";")[0]
    parts = first.split("/")
    name = parts[1] if len(parts) > 2 else parts[0]
    return re.sub(r"_\d+$", "", name)


@dataclass(frozen=True)
class OpInfo:
    """One op of a TFLite graph and the dtypes of the tensors it reads and writes."""

    index: int
    op: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    output_name: str

    @property
    def layer(self) -> str:
        return layer_of(self.output_name)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "op": self.op,
            "input_dtypes": list(self.input_dtypes),
            "output_dtypes": list(self.output_dtypes),
            "layer": self.layer,
        }


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: shape, dtype and quantization parameters."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class GraphSummary:
    """What a `.tflite` holds: its inputs, outputs and ops."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...] = field(default=())

    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(o.op for o in self.ops).items()))

    def op_dtypes(self) -> dict[str, list[str]]:
        """Each op type and the sorted dtypes of the tensors it computes on."""
        seen: dict[str, set[str]] = {}
        for o in self.ops:
            seen.setdefault(o.op, set()).update(o.input_dtypes + o.output_dtypes)
        return {op: sorted(d) for op, d in sorted(seen.items())}

    def dtype_counts(self) -> dict[str, int]:
        """How many ops produce each output dtype."""
        return dict(sorted(Counter(d for o in self.ops for d in o.output_dtypes).items()))

    def float_compute_ops(self) -> list[OpInfo]:
        """Ops that compute in floating point (boundary QUANTIZE/DEQUANTIZE excluded)."""
        return [
            o
            for o in self.ops
            if o.op not in _BOUNDARY_OPS
            and _FLOAT_DTYPES & set(o.input_dtypes + o.output_dtypes)
        ]

    def is_integer_only(self, scheme: str = "int8") -> bool:
        """True when no op computes in float and the activations are of `scheme`'s type."""
        if self.float_compute_ops():
            return False
        wanted = _INT_ACTIVATION_DTYPES[scheme]
        compute = [o for o in self.ops if o.op not in _BOUNDARY_OPS]
        return any(d in wanted for o in compute for d in o.output_dtypes)


def summarize(interp: Any) -> GraphSummary:
    """Reads inputs, outputs and ops (with dtypes) from an allocated interpreter."""
    details = {t["index"]: t for t in interp.get_tensor_details()}

    def dtype(i: int) -> str:
        return np.dtype(details[i]["dtype"]).name

    ops = []
    for op in interp._get_ops_details():  # the only API that lists the graph's ops
        if op["op_name"] == "DELEGATE":  # a delegate's stand-in node, not a model op
            continue
        ins = tuple(dtype(i) for i in op["inputs"] if i >= 0 and i in details)
        outs = tuple(dtype(i) for i in op["outputs"] if i >= 0 and i in details)
        out_name = details[op["outputs"][0]]["name"] if len(op["outputs"]) else ""
        ops.append(OpInfo(int(op["index"]), op["op_name"], ins, outs, out_name))

    def tensors(ds: list[dict]) -> tuple[TensorInfo, ...]:
        return tuple(
            TensorInfo(
                name=d["name"],
                shape=tuple(int(s) for s in d.get("shape_signature", d["shape"])),
                dtype=np.dtype(d["dtype"]).name,
                scale=float(d["quantization"][0]),
                zero_point=int(d["quantization"][1]),
            )
            for d in ds
        )

    return GraphSummary(
        tensors(interp.get_input_details()), tensors(interp.get_output_details()), tuple(ops)
    )


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Brings float inputs to the interpreter's input dtype, quantizing where it is integer."""
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise ValueError(f"Input {detail['name']} is {dtype.name} but has no quantization scale.")
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """Brings an integer output back to float with its quantization parameters."""
    if np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale


def check_input_shape(detail: dict, x: np.ndarray) -> None:
    """Raises a clear error when images `x` do not fit the model input `detail`."""
    expected = tuple(int(s) for s in detail["shape"][1:])
    if tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"The model expects inputs of shape (N, {', '.join(map(str, expected))}), "
            f"got data of shape {x.shape}. Pass data of the size the model was trained on."
        )


def run(interp: Any, x: np.ndarray) -> np.ndarray:
    """Runs a batch-1 interpreter on every sample of `x`; returns float outputs stacked."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    check_input_shape(inp, x)
    from tfcompress._progress import track

    results = []
    for i in track(range(len(x)), len(x), "scoring in LiteRT"):
        interp.set_tensor(inp["index"], quantize_input(x[i : i + 1], inp))
        invoke(interp)
        results.append(dequantize_output(interp.get_tensor(out["index"]), out)[0])
    return np.stack(results)


def invoke(interp: Any) -> None:
    """`interp.invoke()`, with LiteRT's runtime errors (a damaged file) as one clear line."""
    try:
        interp.invoke()
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"LiteRT could not run the model ({detail}). The .tflite file is "
                         "damaged or was not written by a compatible converter.") from None
