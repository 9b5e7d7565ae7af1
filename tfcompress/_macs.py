"""Multiply-accumulate counts of Keras layers and models (one image, batch size 1)."""

from typing import Any

import keras
import numpy as np

_L = keras.layers


def _output_shape(layer: Any) -> tuple | None:
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes:
        return None
    out = nodes[0].outputs[0]
    return tuple(out.shape)


def layer_macs(layer: Any) -> int:
    """MACs of one call of `layer` on one image; 0 for layers without a weighted product."""
    out = _output_shape(layer)
    if out is None:
        return 0
    positions = int(np.prod([d for d in out[1:-1]], dtype=np.int64)) if len(out) > 2 else 1
    if isinstance(layer, (_L.SeparableConv1D, _L.SeparableConv2D)):
        k = int(np.prod(layer.depthwise_kernel.shape[:-2]))
        cin = int(layer.depthwise_kernel.shape[-2]) * int(layer.depthwise_kernel.shape[-1])
        return positions * k * cin + positions * cin * int(out[-1])
    if isinstance(layer, (_L.DepthwiseConv1D, _L.DepthwiseConv2D)):
        return positions * int(np.prod(layer.kernel.shape))
    if isinstance(layer, (_L.Conv1D, _L.Conv2D, _L.Conv3D)) and hasattr(layer, "kernel"):
        return positions * int(np.prod(layer.kernel.shape))
    if isinstance(layer, _L.Dense) and hasattr(layer, "kernel"):
        return positions * int(np.prod(layer.kernel.shape))
    return 0


def model_macs(model: keras.Model) -> int:
    """MACs of one forward pass of `model` on one image (nested models included)."""
    layers = model._flatten_layers(include_self=False, recursive=True)
    return int(sum(layer_macs(layer) for layer in layers))


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
