"""Reading a `.tflite` file in the LiteRT interpreter: tensors, ops and the dtypes they run in.

Shared by the exporter (to verify what it wrote), the benchmark and `inspect`.
"""

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfcompress import _targets
from tfcompress._targets import TARGETS  # noqa: F401  (re-exported)

# Ops at a file's edges that convert or decode rather than compute the model: an integer
# file may keep them in float (a detector's post-processing outputs float boxes and scores).
_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"})
_FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
_INT_ACTIVATION_DTYPES = {"int8": ("int8", "uint8"), "int16x8": ("int16",)}


def weight_bits(content: bytes) -> dict[int, int]:
    """How many constant tensors (weights) of each integer width a file holds, e.g.
    `{8: 4, 4: 6}`: the interpreter reports a packed INT4 tensor as int8, the file does not."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    width = {schema.TensorType.INT4: 4, schema.TensorType.INT8: 8}
    counts: Counter = Counter()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
            if constant and tensor.Type() in width:
                counts[width[tensor.Type()]] += 1
    return dict(counts)


def check_target(target: str) -> None:
    """Raises for an unknown target, or one whose runtime package is not installed."""
    spec = _targets.get(target)
    if spec.needs is not None:
        import importlib.util

        module, extra = spec.needs
        top = module.split(".")[0]
        if importlib.util.find_spec(top) is None or importlib.util.find_spec(module) is None:
            raise ValueError(
                f"target {target!r} needs the {top} package, which is not installed: "
                f"pip install 'tfcompress[{extra}]'.")
    if _targets.is_npu(target):
        from tfcompress import _vela

        _vela.check(target)


def interpreter(model: "str | os.PathLike | bytes", num_threads: int = 1,
                target: str = "litert", preserve_all_tensors: bool = False):
    """Creates an allocated interpreter for a `.tflite` path or its bytes on `target`: a
    LiteRT interpreter, or for `tflm` an object with the same calls (details, set_tensor,
    invoke, get_tensor) running TFLite Micro. `preserve_all_tensors` keeps every intermediate
    tensor readable after `invoke` (reference kernels, no delegate: for debugging; LiteRT's
    optimized builtin kernels, still without a delegate, where the reference kernels lack an
    op, such as an int4 DEPTHWISE_CONV_2D)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    check_target(target)
    target = _targets.get(target).interpreter
    if target == "tflm":
        content = model if isinstance(model, bytes) else read_model(model)
        return MicroInterpreter(content)
    resolver = OpResolverType.BUILTIN_REF if target == "litert-reference" else \
        OpResolverType.AUTO
    if isinstance(model, bytes):
        what, kwargs = "the converted model", {"model_content": model}
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ValueError(f"No .tflite file at {path}. Check the path, or export one first.")
        what, kwargs = path, {"model_path": path}
    resolvers = [resolver]
    if preserve_all_tensors:
        import warnings

        resolvers = [OpResolverType.BUILTIN_REF, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES]
        kwargs["experimental_preserve_all_tensors"] = True
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
    for i, resolver in enumerate(resolvers):
        try:
            interp = Interpreter(num_threads=num_threads, experimental_op_resolver_type=resolver,
                                 **kwargs)
            interp.allocate_tensors()
            return interp
        except (ValueError, RuntimeError) as e:
            detail = " ".join(str(e).split())[:300]
            if i + 1 < len(resolvers) and "Didn't find op" in detail:
                continue  # an op the reference kernels lack: the builtin kernels have it
            raise ValueError(f"{what} is not a valid .tflite model that LiteRT can run "
                             f"({detail}).") from None
    raise AssertionError("unreachable")  # the last resolver returns or raises


def read_model(path: "str | os.PathLike") -> bytes:
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ValueError(f"No .tflite file at {text}. Check the path, or export one first.")
    with open(text, "rb") as f:
        return f.read()


class MicroInterpreter:
    """TFLite Micro's Python interpreter behind the calls tfcompress makes of a LiteRT one.

    Tensor details (names, shapes, quantization) come from LiteRT reading the same file; the
    arithmetic is TFLite Micro's. The arena is `arena_size` bytes (by default a generous one;
    `micro_arena_bytes` measures what the model needs).
    """

    def __init__(self, content: bytes, arena_size: int | None = None):
        self._details = interpreter(content)  # LiteRT: the tensors' details
        inputs = self._details.get_input_details()
        if arena_size is None:
            self._micro, self.arena_size = _generous_micro_interpreter(content, inputs)
        else:
            self.arena_size = arena_size
            self._micro = _micro_interpreter(content, arena_size, inputs)

    def get_input_details(self) -> list[dict]:
        return self._details.get_input_details()

    def get_output_details(self) -> list[dict]:
        return self._details.get_output_details()

    def get_tensor_details(self) -> list[dict]:
        return self._details.get_tensor_details()

    def _position(self, index: int, details: list[dict]) -> int:
        return next(i for i, d in enumerate(details) if d["index"] == index)

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self._micro.set_input(value, self._position(index, self.get_input_details()))

    def invoke(self) -> None:
        self._micro.invoke()

    def get_tensor(self, index: int) -> np.ndarray:
        return self._micro.get_output(self._position(index, self.get_output_details()))


def _generous_arena(content: bytes) -> int:
    return max(16 * 1024, 16 * len(content))


def _generous_micro_interpreter(content: bytes, inputs: list[dict]) -> tuple[Any, int]:
    """A TFLite Micro interpreter with room to spare, and its arena size: 16 times the model
    to start, doubled while the activations do not fit (up to 1 GiB)."""
    size = _generous_arena(content)
    while True:
        try:
            return _micro_interpreter(content, size, inputs), size
        except MicroArenaTooSmall:
            if size >= 1 << 30:
                raise
            size *= 2


def _micro_interpreter(content: bytes, arena_size: int, inputs: list[dict]):
    """A TFLite Micro interpreter that has run once on zeros (`inputs`: the model's input
    details), or one clear error naming the op TFLM lacks."""
    from tflite_micro import runtime

    from tfcompress._quiet import captured_stderr

    with captured_stderr() as log:
        try:
            interp = runtime.Interpreter.from_bytes(content, arena_size=arena_size)
            # TFLM allocates on the first invoke: a missing kernel or a small arena fails here.
            for i, d in enumerate(inputs):
                interp.set_input(np.zeros([max(1, int(s)) for s in d["shape"]], d["dtype"]), i)
            interp.invoke()
            return interp
        except (RuntimeError, ValueError) as e:
            failure = e
    text = log.text()
    missing = re.search(r"Didn't find op for builtin opcode '(\w+)'", text)
    if missing:
        raise MissingMicroOp(missing.group(1))
    if any(w in text.lower() for w in ("allocate", "arena", "resize buffer")):
        raise MicroArenaTooSmall(arena_size)
    detail = " ".join(text.split())[-300:] or str(failure)
    raise ValueError(f"TFLite Micro could not run the model ({detail}).")


class MissingMicroOp(ValueError):
    """TFLite Micro has no kernel for an op of the model."""

    def __init__(self, op: str):
        super().__init__(f"TFLite Micro has no kernel for {op}.")
        self.op = op


class MicroArenaTooSmall(ValueError):
    def __init__(self, size: int):
        super().__init__(f"The model does not fit a TFLite Micro arena of {size:,} bytes.")
        self.size = size


# Added to the arena TFLite Micro's recording allocator measures on this (64-bit) host: the
# interpreter's bookkeeping grows a little with a device's kernels and alignment. Both are
# stated in the header, so a user can trim them after measuring on the device.
ARENA_HEADROOM = 0.10
ARENA_HEADROOM_BYTES = 1024


def with_headroom(measured: int) -> int:
    """An arena of `measured` bytes with the headroom above, 16-byte aligned."""
    return 16 * math.ceil((measured * (1 + ARENA_HEADROOM) + ARENA_HEADROOM_BYTES) / 16)


def micro_arena_bytes(content: bytes) -> int:
    """The tensor arena TFLite Micro uses for this model, as its recording allocator measures
    it (the total of head and tail, without headroom)."""
    from tfcompress._quiet import captured_stderr

    interp, _ = _generous_micro_interpreter(content, interpreter(content).get_input_details())
    with captured_stderr() as log:
        interp.print_allocations()
    found = re.search(r"Arena allocation total (\d+) bytes", log.text())
    if not found:
        raise ValueError("TFLite Micro did not report its arena use.")
    return int(found.group(1))


def layer_names_in(tensor_name: str) -> list[str]:
    """Every path component of every TensorFlow op name fused into a TFLite tensor's name, with
    and without the `_1` suffix TensorFlow adds to reused scopes: the Keras layers (and the
    model) the tensor came from, e.g. `model_1/relu1_1/Relu;model_1/conv1_1/convolution` ->
    `[model_1, model, relu1_1, relu1, model_1, model, conv1_1, conv1]`."""
    found = []
    for part in tensor_name.split(";"):
        for piece in part.split("/")[:-1] or [part]:
            found.append(piece)
            stripped = re.sub(r"_\d+$", "", piece)
            if stripped != piece:
                found.append(stripped)
    return found


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
    """Runs a batch-1 interpreter on every sample of `x`; returns its (first) output, float,
    stacked."""
    return run_all(interp, x)[0]


def outputs_in_model_order(interp: Any) -> list[dict]:
    """The output details in the Keras model's output order. LiteRT lists them in its own
    order; the serving signature names them `output_0`, `output_1`... in the model's."""
    details = interp.get_output_details()
    if len(details) < 2:
        return details
    try:
        signatures = interp.get_signature_list()
        (key,) = signatures
        named = interp.get_signature_runner(key).get_output_details()
        by_index = {d["index"]: d for d in details}
        names = sorted(named, key=lambda n: int(n.rsplit("_", 1)[-1]))
        ordered = [by_index[named[n]["index"]] for n in names]
        if len(ordered) == len(details):
            return ordered
    except (AttributeError, ValueError, KeyError, TypeError):
        pass  # no signature (TFLite Micro) or other names: the file's order
    return details


def run_all(interp: Any, x: np.ndarray, shapes: "list[tuple] | None" = None,
            progress: bool = True) -> list[np.ndarray]:
    """Every output of a batch-1 interpreter on every sample of `x`, as float arrays. With
    `shapes` (the Keras model's output shapes without the batch), each output is checked to
    have its shape; the order is the model's (`outputs_in_model_order`)."""
    inp = interp.get_input_details()[0]
    outs = outputs_in_model_order(interp)
    check_input_shape(inp, x)
    from tfcompress._progress import track

    results: list[list[np.ndarray]] = [[] for _ in outs]
    samples = range(len(x))
    for i in track(samples, len(x), "scoring in LiteRT") if progress else samples:
        interp.set_tensor(inp["index"], quantize_input(x[i : i + 1], inp))
        invoke(interp)
        for j, d in enumerate(outs):
            results[j].append(dequantize_output(interp.get_tensor(d["index"]), d)[0])
    arrays = [np.stack(r) for r in results]
    if shapes is not None and [a.shape[1:] for a in arrays] != [tuple(s) for s in shapes]:
        order, free = [], list(range(len(arrays)))  # not the model's order: match by shape
        for shape in shapes:
            pick = next((j for j in free if arrays[j].shape[1:] == tuple(shape)), free[0])
            free.remove(pick)
            order.append(arrays[pick])
        return order
    return arrays


def predict_classes(interp: Any, x: np.ndarray) -> np.ndarray:
    """The top-1 class of every sample of `x` (the argmax of `run`)."""
    return np.argmax(run(interp, x), axis=-1)


def invoke(interp: Any) -> None:
    """`interp.invoke()`, with LiteRT's runtime errors (a damaged file) as one clear line."""
    try:
        interp.invoke()
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"LiteRT could not run the model ({detail}). The .tflite file is "
                         "damaged or was not written by a compatible converter.") from None
