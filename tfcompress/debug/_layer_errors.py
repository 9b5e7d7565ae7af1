"""Where a quantized model loses accuracy: every layer's activation in Keras against the tensor
it became in the `.tflite` file, run in LiteRT with all intermediate tensors kept.

Tensors are matched to layers by name: the converter names each tensor after the TensorFlow ops
it fuses (`model/relu1/Relu;model/bn1/...;model/conv1/convolution`), and those carry the Keras
layer names. A fused tensor is matched to the last of its layers in the graph (here `relu1`,
whose output is what the fused op computes), when the shapes agree.
"""

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tfcompress import _graph, _io, _legacy, _loading, _tflite
from tfcompress.data import as_arrays

# Layers whose output a quantized file must reproduce; a file matching none was not made from
# the model.
_WEIGHTED = ("Conv", "Dense")  # class-name parts: Conv2D, DepthwiseConv2D, QuantDense...


@dataclass(frozen=True)
class LayerError:
    """How far one layer's output in the file is from the Keras model's.

    Attributes:
        layer: The Keras layer the tensor was matched to.
        fused: Every Keras layer the tensor's op computes (e.g. conv, BatchNorm and ReLU).
        op: The TFLite op that writes the tensor.
        depth: Position of the layer in the Keras graph (0 = first).
        dtype: The tensor's dtype in the file.
        scale: Its quantization scale (`None` for a float tensor).
        rmse: Root-mean-square error against the Keras activation.
        rmse_in_scale: `rmse / scale`: 0.29 is the rounding error of a well-used int8 range.
        snr_db: Signal-to-noise ratio, `10 log10(sum(keras^2) / sum(error^2))`.
        cosine: Cosine similarity between the two, over all samples.
        max_error: Largest absolute error.
        noise_added: The noise-to-signal power ratio here minus that of the layer's nearest
            matched inputs: the error this layer adds (what the table is sorted by).
    """

    layer: str
    fused: tuple[str, ...]
    op: str
    depth: int
    dtype: str
    scale: float | None
    rmse: float
    rmse_in_scale: float | None
    snr_db: float
    cosine: float
    max_error: float
    noise_added: float

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["fused"] = list(self.fused)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in out.items()}


@dataclass(frozen=True)
class LayerErrors:
    """`layer_errors`' result: one `LayerError` per matched layer, in graph order."""

    model: str
    tflite: str
    samples: int
    layers: tuple[LayerError, ...]
    unmatched: tuple[str, ...]
    weighted: tuple[str, ...] = ()

    def worst(self, n: int = 3) -> list[LayerError]:
        """The `n` layers that add the most error."""
        return sorted(self.layers, key=lambda e: -e.noise_added)[:n]

    def culprits(self, n: int = 3) -> list[str]:
        """The weighted layers (conv, dense) that compute the `n` worst tensors."""
        names: list[str] = []
        for e in self.worst(len(self.layers)):
            weighted = [f for f in e.fused if f in self.weighted] or list(e.fused)
            for name in weighted:
                if name not in names:
                    names.append(name)
            if len(names) >= n:
                break
        return names[:n]

    def to_dict(self) -> dict:
        return {"model": self.model, "tflite": self.tflite, "samples": self.samples,
                "layers": [e.to_dict() for e in self.layers],
                "unmatched_layers": list(self.unmatched)}

    def __str__(self) -> str:
        rows = [("layer", "op", "SNR dB", "cosine", "RMSE/scale", "max err", "adds")]
        for e in sorted(self.layers, key=lambda e: -e.noise_added):
            rows.append((
                e.layer, e.op, f"{e.snr_db:.1f}", f"{e.cosine:.4f}",
                "-" if e.rmse_in_scale is None else f"{e.rmse_in_scale:.2f}",
                f"{e.max_error:.3g}", f"{100 * e.noise_added:+.2f} %",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        head = (f"{self.tflite} against {self.model}, {self.samples} samples; sorted by the "
                "error each layer adds (noise power as a share of signal power)")
        return "\n".join([head, *lines])

    def plot(self, path: "str | os.PathLike") -> str:
        """Writes a PNG of SNR against depth, the worst layers named. Returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        depth = [e.depth for e in self.layers]
        snr = [min(e.snr_db, 80.0) for e in self.layers]
        ax.plot(depth, snr, "o-", ms=3)
        for e in self.worst(3):
            ax.annotate(e.layer, (e.depth, min(e.snr_db, 80.0)), fontsize=8,
                        textcoords="offset points", xytext=(4, -10))
        ax.set_xlabel("layer depth in the Keras graph")
        ax.set_ylabel("SNR of the file's tensor (dB)")
        ax.set_title(f"{os.path.basename(self.tflite)}: error by layer")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with _io.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return os.fspath(path)

    def save(self, folder: "str | os.PathLike") -> list[str]:
        """Writes `layer_errors.json`, `layer_errors.txt` and `layer_errors.png` to `folder`."""
        os.makedirs(folder, exist_ok=True)
        json_path = os.path.join(folder, "layer_errors.json")
        text_path = os.path.join(folder, "layer_errors.txt")
        _io.write_text_atomic(json_path, json.dumps(self.to_dict(), indent=2) + "\n")
        _io.write_text_atomic(text_path, str(self) + "\n")
        return [json_path, text_path, self.plot(os.path.join(folder, "layer_errors.png"))]


def _keras_layers(model: Any) -> tuple[list[Any], dict[str, list[str]]]:
    """`(operation, output, inputs)` of every layer call, and each name's input names."""
    calls = _graph.layer_nodes(model)  # the caller has checked and flattened the model
    return calls, {getattr(op, "name", ""): ins for op, _, ins in calls}


def _match(interp: Any, calls: list[Any], model: Any) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Keras layer name -> (tensor index, fused layer names) for the file's op outputs."""
    layer_calls = [(op, out) for op, out, _ in calls if isinstance(op, keras.layers.Layer)]
    order = {op.name: i for i, (op, _) in enumerate(layer_calls)}
    wrapped = _quant_names(calls)
    shapes = {op.name: tuple(out.shape[1:]) for op, out in layer_calls}
    details = {d["index"]: d for d in interp.get_tensor_details()}
    graph_outputs = [d["index"] for d in interp.get_output_details()]
    output_layers = _graph.output_names(model)
    ops = interp._get_ops_details()
    # The tensor a DEQUANTIZE turns into a model output stands for that output.
    feeds_output = {op["inputs"][0]: op["outputs"][0] for op in ops
                    if op["op_name"] == "DEQUANTIZE" and op["outputs"][0] in graph_outputs}
    found: dict[str, tuple[int, tuple[str, ...], bool]] = {}
    for op in ops:
        if op["op_name"] in ("DEQUANTIZE", "QUANTIZE") and op["outputs"][0] in graph_outputs:
            continue
        for index in op["outputs"]:
            detail = details[index]
            candidates = [n for n in dict.fromkeys(
                m for n in _tflite.layer_names_in(detail["name"]) for m in
                ([n] if n in order else wrapped.get(n, []))) if n in order]
            output_index = feeds_output.get(index, index)
            if output_index in graph_outputs and len(output_layers) > graph_outputs.index(
                    output_index):
                candidates = candidates or [output_layers[graph_outputs.index(output_index)]]
            shape = tuple(int(s) for s in detail["shape"][1:])
            fitting = [n for n in candidates if shapes.get(n) == shape]
            if not fitting:
                continue
            name = max(fitting, key=order.get)
            integer = np.issubdtype(np.dtype(detail["dtype"]), np.integer)
            if name not in found or integer or not found[name][2]:
                found[name] = (index, tuple(sorted(candidates, key=order.get)), integer)
    return {k: (v[0], v[1]) for k, v in found.items()}


def _quant_names(calls: list[Any]) -> dict[str, list[str]]:
    """For a file exported from the model's quantization-aware copy (`calibrate_ranges`:
    post-training int4, per-tensor or equalized files): each wrapper's name in the copy
    (`<layer>_quant`) -> the model's layers it computes: the layer and the BatchNormalization
    and activation layers that alone read its output, which the copy folds into it."""
    kinds = (keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.Activation)
    layers = {op.name: op for op, _, _ in calls if isinstance(op, keras.layers.Layer)}
    readers: dict[str, list[str]] = {}
    for op, _, ins in calls:
        for name in ins:
            readers.setdefault(name, []).append(getattr(op, "name", ""))
    wrapped = {}
    for name in layers:
        chain = [name]
        while len(readers.get(chain[-1], [])) == 1 and isinstance(
                layers.get(readers[chain[-1]][0]), kinds):
            chain.append(readers[chain[-1]][0])
        for suffix in ("_quant", "_dw_quant"):
            if name + suffix not in layers:
                wrapped[name + suffix] = chain
    return wrapped


# A kernel whose output channels point the same way in the file (|cosine|, which BatchNorm
# folding and int8 rounding keep near 1) is the model's own; another training's is far below.
_SAME_KERNEL = 0.9


def _channel_vectors(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """A Keras kernel as one row per output channel, elements in the file's order."""
    if depthwise:  # (kh, kw, in, mult): one channel per (in, mult), its taps in (h, w) order
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1]).T
    return kernel.reshape(-1, kernel.shape[-1]).T  # (..., out): taps in (h, w, in) order


def _kernel_similarity(rows: np.ndarray, tensor: np.ndarray) -> float:
    """Mean |cosine| between a kernel's channels and a file tensor's, or 0 if they cannot be
    the same weights (output channels first for convs and FC, last for depthwise)."""
    channels = len(rows)
    if tensor.size != rows.size:
        return 0.0
    if tensor.shape[0] == channels:
        other = tensor.reshape(channels, -1)
    elif tensor.shape[-1] == channels:
        other = tensor.reshape(-1, channels).T
    else:
        return 0.0
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(other, axis=1)
    dots = np.abs(np.sum(rows * other, axis=1))
    alive = norms > 0  # a pruned-away channel says nothing
    return float(np.mean(dots[alive] / norms[alive])) if alive.any() else 1.0


def _check_same_weights(model: keras.Model, interp: Any, tflite_path: Any,
                        model_name: str) -> None:
    """Raises when the file's kernels are not the model's: the same architecture trained
    again matches every name and shape, and would be blamed layer by layer for its
    different weights."""
    written = {t for o in interp._get_ops_details() for t in o["outputs"]}
    inputs = {d["index"] for d in interp.get_input_details()}
    constants = []
    for d in interp.get_tensor_details():
        if d["index"] in written or d["index"] in inputs or len(d["shape"]) < 2:
            continue
        try:
            constants.append(np.asarray(interp.get_tensor(d["index"]), np.float64))
        except ValueError:  # a tensor with no data of its own
            continue
    scores = {}
    for layer in _graph.all_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not any(k in type(layer).__name__ for k in _WEIGHTED):
            continue
        value = np.asarray(keras.ops.convert_to_numpy(kernel), np.float64)
        if value.ndim < 2:
            continue
        rows = _channel_vectors(value, "Depthwise" in type(layer).__name__)
        candidates = [_kernel_similarity(rows, t) for t in constants if t.size == value.size]
        if candidates:
            scores[layer.name] = max(candidates)
    differ = {n: v for n, v in scores.items() if v < _SAME_KERNEL}
    if scores and len(differ) > len(scores) / 2:
        worst = ", ".join(f"{n} ({v:.2f})" for n, v in list(differ.items())[:4])
        raise ValueError(
            f"{os.fspath(tflite_path)} holds other weights than {model_name}: the kernels of "
            f"{len(differ)} of its {len(scores)} weighted layers point elsewhere (cosine "
            f"{worst}; the file of this model gives about 1.0). It was exported from another "
            "training of this architecture: pass the model the file was made from.")


def layer_errors(
    model: Any,
    tflite_path: "str | os.PathLike",
    data: Any,
    num_samples: int = 64,
    *,
    safe_mode: bool = True,
) -> LayerErrors:
    """Compares every layer of a Keras model with the tensor it became in a `.tflite` file.

    The file runs in LiteRT's reference kernels with all intermediate tensors kept; each
    tensor is dequantized and compared with the Keras activation of the layer it was matched
    to (by name, see the module notes): RMSE in units of the tensor's quantization scale, SNR,
    cosine similarity and largest error, and the error each layer adds on top of its inputs'.
    Works for post-training files (pass the float model) and quantization-aware ones (pass the
    `quantize_aware` model), with float or integer input and output.

    Args:
        model: The Keras model the file was made from: a `keras.Model` or a `.keras` path.
        tflite_path: The `.tflite` file.
        data: Images to run: an array, `(x, y)`, a `Dataset` (its test split) or a data path.
        num_samples: How many images. Defaults to `64`.
        safe_mode: Keras' safe mode when `model` is a path. Defaults to `True`.

    Returns:
        A `LayerErrors`; `str()` is the table sorted by the error each layer adds, `.save(dir)`
        writes JSON, text and a plot of error against depth.

    Raises:
        ValueError: If the file's input does not fit the data, or the file was not made from
            this model (no tensor matches its weighted layers; the message names them).

    Examples:
        >>> import tempfile, tfcompress as tfc
        >>> ds = tfc.data.load("mnist")
        >>> model = tfc.reference.reference_cnn()
        >>> path = tempfile.mkdtemp() + "/m.tflite"
        >>> _ = tfc.export.to_tflite(model, path, "int8", representative_data=ds)
        >>> errors = layer_errors(model, path, ds, num_samples=8)
        >>> names = [e.layer for e in errors.layers]
        >>> names[:3]
        ['relu1', 'pool1', 'relu2']
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    model_name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model.name
    if isinstance(model, (str, os.PathLike)):
        model = _loading.load_keras_model(model, safe_mode=safe_mode, compile=False)
    _graph.require_functional(model, "layer_errors")
    model = _graph.flat(model)  # a nested backbone's layers are compared one by one too
    interp = _tflite.interpreter(tflite_path, preserve_all_tensors=True)
    x, _ = as_arrays(data, split_name="test", limit=num_samples)
    x = np.asarray(x[:num_samples], dtype=np.float32)
    inp = interp.get_input_details()[0]
    _tflite.check_input_shape(inp, x)
    calls, inputs_of = _keras_layers(model)
    matched = _match(interp, calls, model)
    weighted = [op.name for op, _, _ in calls if isinstance(op, keras.layers.Layer)
                and any(k in type(op).__name__ for k in _WEIGHTED)]
    fused_all = {n for _, fused in matched.values() for n in fused}
    missing = [n for n in weighted if n not in fused_all]
    if weighted and len(missing) > len(weighted) / 2:
        raise ValueError(
            f"{os.fspath(tflite_path)} does not look made from {model_name}: no tensor in it "
            f"matches {len(missing)} of the model's {len(weighted)} weighted layers "
            f"({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''}). Pass the model "
            "the file was exported from (for a quantization-aware export, the quantize_aware "
            "model)."
        )
    _check_same_weights(model, interp, tflite_path, model_name)
    names = [n for n in (op.name for op, _, _ in calls) if n in matched]
    by_name = {op.name: out for op, out, _ in calls}
    probe = keras.Model(model.inputs, [by_name[n] for n in names])
    keras_values = probe.predict(x, batch_size=32, verbose=0)
    if len(names) == 1:
        keras_values = [keras_values]
    details = {d["index"]: d for d in interp.get_tensor_details()}
    file_values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(len(x)):
        interp.set_tensor(inp["index"], _tflite.quantize_input(x[i : i + 1], inp))
        _tflite.invoke(interp)
        for n in names:
            detail = details[matched[n][0]]
            file_values[n].append(_tflite.dequantize_output(interp.get_tensor(detail["index"]),
                                                            detail))
    writer = {t: o["op_name"] for o in interp._get_ops_details() for t in o["outputs"]}
    nsr: dict[str, float] = {}
    rows = []
    order = {op.name: i for i, (op, _, _) in enumerate(calls)}

    def inherited(name: str, seen: set) -> float:
        """Largest noise-to-signal ratio among the nearest matched inputs of `name`."""
        worst = 0.0
        for up in inputs_of.get(name, []):
            if up in seen:
                continue
            seen.add(up)
            worst = max(worst, nsr[up] if up in nsr else inherited(up, seen))
        return worst

    for n, ref in zip(names, keras_values, strict=True):
        ref = np.asarray(ref, dtype=np.float64)
        got = np.concatenate(file_values[n]).astype(np.float64).reshape(ref.shape)
        err = got - ref
        signal, noise = float(np.sum(ref**2)), float(np.sum(err**2))
        nsr[n] = noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)
        detail = details[matched[n][0]]
        scale = float(detail["quantization"][0]) if detail["quantization"][0] else None
        rmse = float(np.sqrt(np.mean(err**2)))
        norm = float(np.linalg.norm(ref) * np.linalg.norm(got))
        op_name = writer.get(matched[n][0], "?")
        rows.append(LayerError(
            layer=n, fused=matched[n][1], op=op_name, depth=order[n],
            dtype=np.dtype(detail["dtype"]).name, scale=scale, rmse=rmse,
            rmse_in_scale=None if scale is None else rmse / scale,
            snr_db=math.inf if noise == 0 else (10 * math.log10(signal / noise)
                                                if signal > 0 else -math.inf),
            cosine=float(np.sum(ref * got) / norm) if norm > 0 else 1.0,
            max_error=float(np.max(np.abs(err))) if err.size else 0.0,
            noise_added=nsr[n] - inherited(n, set()),
        ))
    result = LayerErrors(model=model_name, tflite=os.fspath(tflite_path), samples=len(x),
                         layers=tuple(rows), unmatched=tuple(missing), weighted=tuple(weighted))
    return result
