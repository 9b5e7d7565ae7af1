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
