"""Post-training repairs of a quantization-aware model's weights: cross-layer equalization and
bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", 2019).

Equalization: where a layer's output reaches exactly one next weight layer through ops that
commute with a positive per-channel scale (ReLU, max and average pooling, padding), output
channel `i` of the first can be divided by `s_i` and input channel `i` of the second
multiplied by it without changing the function. Choosing `s_i = sqrt(r1_i / r2_i)` (the
channels' weight ranges) gives both the same range, which per-tensor weight scales and
depthwise layers with very unequal channels need.

Bias correction: quantized weights shift each output channel's mean; measured on calibration
images (each layer's output with float and with rounded weights, on the inputs it gets in the
quantized model, layer by layer in graph order), the shift is taken out of the bias.
"""

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress import _graph
from tfcompress.quantization._layers import (
    ActivationQuantizer,
    QuantConv,
    QuantConvTranspose,
    QuantDense,
    QuantDepthwiseConv2D,
    _QuantWeightLayer,
)

_L = keras.layers
# Ops between two weight layers that commute with a positive scale per channel.
_SCALE_PASSTHROUGH = (_L.MaxPooling1D, _L.MaxPooling2D, _L.AveragePooling1D,
                      _L.AveragePooling2D, _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D,
                      _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.ZeroPadding1D,
                      _L.ZeroPadding2D, _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D,
                      _L.Identity, ActivationQuantizer)
_ROUNDS = 20


def _out_ranges(layer: _QuantWeightLayer) -> np.ndarray:
    k = ops.convert_to_numpy(layer.kernel)
    if isinstance(layer, QuantDepthwiseConv2D):
        k = k.reshape(k.shape[:-2] + (-1,))
    return np.abs(k).reshape(-1, k.shape[-1]).max(axis=0)


def _in_ranges(layer: _QuantWeightLayer) -> np.ndarray:
    k = np.abs(ops.convert_to_numpy(layer.kernel))
    if isinstance(layer, QuantDepthwiseConv2D):
        return k.max(axis=tuple(i for i in range(k.ndim) if i != k.ndim - 2))
    return np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1).max(axis=1)


def _scale_out(layer: _QuantWeightLayer, s: np.ndarray) -> None:
    k = ops.convert_to_numpy(layer.kernel)
    shape = k.shape
    if isinstance(layer, QuantDepthwiseConv2D):
        k = k.reshape(shape[:-2] + (-1,))
    layer.kernel.assign((k / s).reshape(shape))
    layer.bias.assign(ops.convert_to_numpy(layer.bias) / s)


def _scale_in(layer: _QuantWeightLayer, s: np.ndarray) -> None:
    k = ops.convert_to_numpy(layer.kernel)
    # (a depthwise kernel's channel c only reads input channel c: its output, and so its
    # bias, stays as it was)
    layer.kernel.assign(k * s.reshape(-1, 1))


def _why_not_first(layer: Any) -> str | None:
    if not isinstance(layer, _QuantWeightLayer) or isinstance(layer, QuantConvTranspose):
        return "it is not a convolution or Dense layer"
    if layer.activation not in ("linear", "relu"):
        return f"it ends in {layer.activation}, which a scale does not pass through"
    return None


def _next_weight_layer(graph: _graph.Graph, node: Any) -> tuple[Any | None, str]:
    """The one weight layer that `node`'s output reaches through scale-passthrough ops."""
    tensor = node.outputs[0]
    while True:
        user = graph.single_consumer(tensor)
        if user is None:
            return None, "its output goes to more than one layer or leaves the model"
        op = user.operation
        if isinstance(op, (QuantConv, QuantDense, QuantDepthwiseConv2D)):
            return op, ""
        if isinstance(op, _L.ReLU) and op.max_value is None and not op.negative_slope:
            tensor = user.outputs[0]
            continue
        if not isinstance(op, _SCALE_PASSTHROUGH):
            return None, f"{op.name!r} ({type(op).__name__}) follows it"
        tensor = user.outputs[0]


def equalize_pairs(q: keras.Model) -> list[tuple[str, str]]:
    """Cross-layer equalization of a quantization-aware model, in place (before its ranges
    are calibrated). Returns the `(first, second)` layer pairs it balanced.

    Raises:
        ValueError: When no pair has the structure equalization needs, naming a layer and
            why it does not qualify.
    """
    graph = _graph.Graph(q)
    pairs, reasons = [], []
    for node in _graph.all_nodes(q):
        layer = node.operation
        if not isinstance(layer, _QuantWeightLayer):
            continue
        why = _why_not_first(layer)
        second, why_next = (None, "") if why else _next_weight_layer(graph, node)
        if second is None:
            reasons.append((layer.name, why or why_next))
            continue
        if isinstance(second, QuantDepthwiseConv2D) and second.kernel.shape[-1] != 1:
            reasons.append((layer.name, f"{second.name!r} has a depth multiplier"))
            continue
        pairs.append((layer, second))
    if not pairs:
        name, why = reasons[0] if reasons else (q.name, "it has no weight layers")
        raise ValueError(
            f"Cross-layer equalization found no pair of layers to balance in {q.name!r}: it "
            "needs a convolution or Dense layer ending in ReLU or no activation whose output "
            "reaches exactly one next convolution or Dense layer; layer "
            f"{name.removesuffix('_quant')!r} does not: {why}.")
    for _ in range(_ROUNDS):
        moved = 0.0
        for first, second in pairs:
            r1, r2 = _out_ranges(first), _in_ranges(second)
            ok = (r1 > 1e-12) & (r2 > 1e-12)
            s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)
            s = s.astype(np.float32)
            _scale_out(first, s)
            _scale_in(second, s)
            moved = max(moved, float(np.abs(np.log(s)).max()))
        if moved < 1e-3:
            break
    return [(a.name, b.name) for a, b in pairs]


def correct_biases(q: keras.Model, x: np.ndarray, batch_size: int = 64) -> list[str]:
    """Empirical bias correction of a calibrated quantization-aware model, in place: for each
    weight layer in graph order, on the inputs it gets in the quantized model (every
    quantization point on, the corrections before it made), the mean of its output with float
    weights less that with its quantized weights, per channel and before the activation, is
    added to its bias: the mean error its weights' rounding causes is taken out. Returns the
    layers corrected."""
    weighted = [layer for layer in _graph.all_layers(q) if isinstance(layer, _QuantWeightLayer)]
    x = np.asarray(x[: max(batch_size, 1) * 4], np.float32)
    inputs = q.inputs[0] if len(q.inputs) == 1 else q.inputs

    def mean_error(layer: _QuantWeightLayer) -> np.ndarray:
        reach = keras.Model(inputs, layer.input)
        activation, layer.activation = layer.activation, "linear"
        layer.output_quantizer.simulate = False
        try:
            sums, count = 0.0, 0
            for start in range(0, len(x), batch_size):
                h = reach(x[start:start + batch_size], training=False)
                layer.simulate = False
                exact = ops.convert_to_numpy(layer(h, training=False))
                layer.simulate = True
                rounded = ops.convert_to_numpy(layer(h, training=False))
                error = (exact - rounded).reshape(-1, exact.shape[-1])
                sums, count = sums + error.sum(axis=0), count + len(error)
            return sums / max(count, 1)
        finally:
            layer.activation = activation
            layer.simulate = True
            layer.output_quantizer.simulate = True

    for layer in weighted:
        shift = mean_error(layer)
        layer.bias.assign(ops.convert_to_numpy(layer.bias) + shift.astype(np.float32))
    return [layer.name for layer in weighted]
