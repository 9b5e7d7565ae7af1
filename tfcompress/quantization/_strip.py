"""A quantization-aware model back to plain Keras layers with its trained weights.

Used to export a QAT model that keeps some layers in float: the converter's QAT path
quantizes every layer between two fake-quant points, so such a model is exported as
post-training int8 of its stripped copy (same weights, which are already on the int8 grid),
with the float layers left out of quantization.
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
    QuantScalarOp,
)

_L = keras.layers


def _activation(name: str) -> Any:
    return None if name == "linear" else name


def _float_twin(op: Any) -> tuple[Any, list[np.ndarray]] | None:
    """The plain Keras layer computing what `op` computes without fake-quant, and its weights."""
    name = op.name.removesuffix("_quant")
    if isinstance(op, (QuantConv, QuantConvTranspose, QuantDepthwiseConv2D, QuantDense)):
        kernel = ops.convert_to_numpy(op._kernel())  # pruned weights stay exactly zero
        weights = [kernel, ops.convert_to_numpy(op.bias)]
        act = _activation(op.activation)
        if isinstance(op, QuantDense):
            return _L.Dense(op.units, activation=act, name=name), weights
        if isinstance(op, QuantDepthwiseConv2D):
            return _L.DepthwiseConv2D(op.kernel_size, strides=op.strides, padding=op.padding,
                                      depth_multiplier=op.depth_multiplier,
                                      dilation_rate=op.dilation_rate, activation=act,
                                      name=name), weights
        if isinstance(op, QuantConvTranspose):
            return _L.Conv2DTranspose(op.filters, op.kernel_size, strides=op.strides,
                                      padding=op.padding, output_padding=op.output_padding,
                                      dilation_rate=op.dilation_rate, activation=act,
                                      name=name), weights
        conv = _L.Conv1D if len(op.kernel_size) == 1 else _L.Conv2D
        return conv(op.filters, op.kernel_size, strides=op.strides, padding=op.padding,
                    dilation_rate=op.dilation_rate, activation=act, name=name), weights
    if isinstance(op, QuantScalarOp):
        value = np.asarray(op.value, np.float32)
        if op.op == "multiply":
            return _L.Rescaling(value.tolist() if value.ndim else float(value), name=name), []
        return _L.Rescaling(1.0, value.tolist() if value.ndim else float(value), name=name), []
    return None


def strip_fake_quant(model: keras.Model) -> keras.Model:
    """A float copy of a `quantize_aware` model: quantized layers become Conv/Dense/
    DepthwiseConv2D (BatchNorm stays folded, activations fused) with the trained weights, and
    activation quantizers disappear. Its outputs equal the quantization-aware model's with
    fake-quant switched off.

    Args:
        model: A model from `quantize_aware` (trained or not). It is not modified.

    Returns:
        A new, uncompiled `keras.Model`.
    """

    def visit(node: Any, args: tuple, kwargs: dict) -> Any:
        op = node.operation
        if isinstance(op, ActivationQuantizer):
            return args[0]
        twin = _float_twin(op)
        if twin is None:
            return None
        layer, weights = twin
        out = layer(args[0])
        if weights:
            layer.set_weights(weights)
        return out

    return _graph.rebuild(model, visit, model.name.removesuffix("_qat"))
