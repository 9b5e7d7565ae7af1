"""Multiply-accumulate counts of Keras layers and models (one image, batch size 1)."""

from typing import Any

import keras
import numpy as np

from tfcompress import _graph

_L = keras.layers


def _positions(shape: tuple) -> int:
    """Output positions of one image: every axis but the batch and the channels."""
    return int(np.prod([d for d in shape[1:-1]], dtype=np.int64)) if len(shape) > 2 else 1


def layer_macs(layer: Any) -> int:
    """MACs of one call of `layer` on one image; 0 for layers without a weighted product.

    Any layer with a `kernel` counts one MAC per kernel value per position: output positions
    for convolutions (Conv, Depthwise) and Dense, input positions for transposed convolutions.
    So the quantized layers of `quantize_aware` and the factorized ones count like the layers
    they replace."""
    out = _graph.output_shape(layer)
    if out is None:
        return 0
    if isinstance(layer, (_L.SeparableConv1D, _L.SeparableConv2D)):
        k = int(np.prod(layer.depthwise_kernel.shape[:-2]))
        cin = int(layer.depthwise_kernel.shape[-2]) * int(layer.depthwise_kernel.shape[-1])
        return _positions(out) * (k * cin + cin * int(out[-1]))
    kernel = getattr(layer, "kernel", None)
    if kernel is None or len(kernel.shape) < 2:
        return 0
    positions = _positions(out)
    if "Transpose" in type(layer).__name__:  # each input position scatters the whole kernel
        inputs = layer.input.shape if not isinstance(layer.input, list) else None
        positions = _positions(tuple(inputs)) if inputs is not None else positions
    return positions * int(np.prod(kernel.shape))


def model_macs(model: keras.Model) -> int:
    """MACs of one forward pass of `model` on one image (nested models included)."""
    return int(sum(layer_macs(layer) for layer in _graph.all_layers(model)))


class SizeRatios:
    """Params and MACs ratios for a report with `params_before/after` and `macs_before/after`."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def param_ratio(self) -> float:
        return self.params_after / max(1, self.params_before)

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / max(1, self.macs_before)

    def size_dict(self) -> dict:
        """The four counts and both ratios (rounded), for `to_dict`."""
        return {"params_before": self.params_before, "params_after": self.params_after,
                "param_ratio": round(self.param_ratio, 4), "macs_before": self.macs_before,
                "macs_after": self.macs_after, "mac_ratio": round(self.mac_ratio, 4)}

    def size_line(self) -> str:
        """One line: params and MACs before -> after with their ratios."""
        return (f"model: {self.params_before:,} -> {self.params_after:,} params "
                f"({self.param_ratio:.2f}x), {self.macs_before:,} -> {self.macs_after:,} MACs "
                f"({self.mac_ratio:.2f}x)")
