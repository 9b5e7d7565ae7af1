"""`shrink`: rebuild a channel-pruned model without its dead channels, physically smaller."""

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress import _graph, _legacy
from tfcompress._macs import SizeRatios, model_macs
from tfcompress.pruning._channels import ChannelGraph, ChannelGroup, output_kernel


@dataclass(frozen=True)
class LayerChannels:
    """Output channels of one Conv/Dense layer before and after `shrink`."""

    name: str
    kind: str
    channels_before: int
    channels_after: int


@dataclass(frozen=True)
class ShrinkReport(SizeRatios):
    """What `shrink` removed: per-layer channels, parameters and MACs, and what it left whole."""

    layers: tuple[LayerChannels, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    left_whole: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict:
        return {
            **self.size_dict(),
            "layers": [asdict(x) for x in self.layers],
            "left_whole": [{"group": g, "reason": r} for g, r in self.left_whole],
        }

    def __str__(self) -> str:
        rows = [f"{'layer':<28} {'kind':<16} {'channels':>15}"]
        for x in self.layers:
            rows.append(f"{x.name:<28} {x.kind:<16} {x.channels_before:>6} -> "
                        f"{x.channels_after:<6}")
        for group, reason in self.left_whole:
            rows.append(f"left whole: {group} ({reason})")
        rows.append(self.size_line())
        return "\n".join(rows)


def _is_zero(value: Any) -> np.ndarray:
    return np.asarray(value) == 0


def _dead(group: ChannelGroup) -> np.ndarray:
    """Channels whose value is exactly zero wherever it is read: zero filters and biases in
    every producer, and members that keep zero at zero (depthwise bias zero, BatchNorm giving
    zero for a zero input)."""
    dead = np.ones(group.size, bool)
    for layer in group.producers:
        kernel = ops.convert_to_numpy(output_kernel(layer)).reshape(-1, group.size)
        dead &= _is_zero(kernel).all(axis=0)
        if getattr(layer, "use_bias", False):
            dead &= _is_zero(ops.convert_to_numpy(layer.bias))
    return dead


def _member_keeps_zero(layer: Any, channels: int) -> np.ndarray:
    """For each of the member's channels: does a zero input give a zero output?"""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        if not layer.use_bias:
            return np.ones(channels, bool)
        return _is_zero(ops.convert_to_numpy(layer.bias))
    gamma = ops.convert_to_numpy(layer.gamma) if layer.scale else 1.0
    beta = ops.convert_to_numpy(layer.beta) if layer.center else 0.0
    mean = ops.convert_to_numpy(layer.moving_mean)
    var = ops.convert_to_numpy(layer.moving_variance)
    out = beta - gamma * mean / np.sqrt(var + layer.epsilon)
    return _is_zero(out) | (_is_zero(gamma) & _is_zero(beta))


def dead_channels(graph: ChannelGraph) -> dict[int, np.ndarray]:
    """Keep vectors (True = keep) for every prunable group: its channels that are not dead."""
    keep: dict[int, np.ndarray] = {}
    for group in graph.groups:
        if group.prunable:
            keep[group.id] = ~_dead(group)
    # A member that would turn a dead channel into a constant keeps it alive.
    for group in graph.groups:
        if group.id not in keep:
            continue
        for layer, layout in group.members:
            ok = _member_keeps_zero(layer, layout.channels)
            offset = 0
            for seg in layout.segments:
                if graph.find(seg.group) == group.id:
                    span = slice(seg.start, seg.start + seg.length)
                    keep[group.id][span] |= ~ok[offset:offset + seg.length]
                offset += seg.length
    for k in keep.values():
        if not k.any():
            k[0] = True  # never remove every channel of a tensor
    return keep


def shrink(
    model: keras.Model, return_report: bool = False
) -> keras.Model | tuple[keras.Model, ShrinkReport]:
    """Returns a physically smaller copy of a channel-pruned model, computing the same outputs.

    After `Pruning(..., granularity="channel")` the removed channels are exactly zero (their
    filters, biases and BatchNormalization scale and shift). `shrink` finds them through the
    coupled channel groups (residual `Add`s, squeeze-excite `Multiply`s, `Concatenate` offsets,
    depthwise convs, BatchNormalization, Flatten) and rebuilds the model with thinner Conv,
    Dense, DepthwiseConv2D and BatchNormalization layers and the matching weights. The result
    is a plain Keras model: save it, fine-tune it, `quantize_aware` it, export it.

    Args:
        model: A functional or Sequential model; not modified.
        return_report: Also return a `ShrinkReport`. Defaults to `False`.

    Returns:
        The new model (uncompiled); with `return_report`, `(model, report)`.

    Raises:
        TypeError: If `model` is subclassed.

    Examples:
        >>> import keras, numpy as np
        >>> from tfcompress.pruning import shrink
        >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="hidden"),
        ...                           keras.layers.Dense(2, name="out")])
        >>> k, b = model.layers[0].get_weights()
        >>> k[:, :4], b[:4] = 0, 0  # four dead channels
        >>> model.layers[0].set_weights([k, b])
        >>> small, report = shrink(model, return_report=True)
        >>> small.get_layer("hidden").units, report.params_before, report.params_after
        (4, 74, 38)
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    graph = ChannelGraph(model)
    keep = dead_channels(graph)
    producers = [p for g in graph.groups for p in g.producers]
    producer_ids = {id(p) for p in producers}

    def visit(node: Any, args: tuple, kwargs: dict) -> Any:
        op = node.operation
        weighted = id(op) in producer_ids
        member = isinstance(op, (keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization))
        if not (weighted or member) or id(op) not in graph.in_layouts:
            return None
        in_idx = graph.layout_indices(graph.in_layouts[id(op)], keep)
        weights = op.get_weights()
        if weighted:
            out_idx = np.flatnonzero(graph.layout_keep(graph.out_layouts[id(op)], keep))
            n_in, n_out = weights[0].shape[-2], ops.convert_to_numpy(
                output_kernel(op)).shape[-1]
            if len(in_idx) == n_in and len(out_idx) == n_out:
                return None
            config = op.get_config()
            config["units" if isinstance(op, keras.layers.Dense) else "filters"] = len(out_idx)
            new = type(op).from_config(config)
            if isinstance(op, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
                # depthwise (..., in, multiplier); pointwise rows are (in, multiplier) pairs
                depthwise, pointwise = weights[0], weights[1]
                rows = (in_idx[:, None] * op.depth_multiplier
                        + np.arange(op.depth_multiplier)[None, :]).reshape(-1)
                new_weights = [np.take(depthwise, in_idx, axis=-2),
                               np.take(np.take(pointwise, rows, axis=-2), out_idx, axis=-1)]
                new_weights += [w[out_idx] for w in weights[2:]]
            else:
                kernel = np.take(np.take(weights[0], in_idx, axis=-2), out_idx, axis=-1)
                new_weights = [kernel] + [w[out_idx] for w in weights[1:]]
        else:
            n = weights[0].shape[-2] if isinstance(op, keras.layers.DepthwiseConv2D) \
                else weights[0].shape[0]
            if len(in_idx) == n:
                return None
            new = type(op).from_config(op.get_config())
            if isinstance(op, keras.layers.DepthwiseConv2D):
                new_weights = [np.take(weights[0], in_idx, axis=-2)] + [w[in_idx]
                                                                        for w in weights[1:]]
            else:
                new_weights = [w[in_idx] for w in weights]
        out = new(*args, **kwargs)
        new.set_weights(new_weights)
        return out

    small = _graph.rebuild(model, visit, name=model.name)
    if not return_report:
        return small
    rows = []
    for layer in sorted(producers, key=lambda x: _order(model).get(id(x), 0)):
        before = int(output_kernel(layer).shape[-1])
        try:
            after = int(output_kernel(small.get_layer(layer.name)).shape[-1])
        except ValueError:
            after = before
        rows.append(LayerChannels(layer.name, type(layer).__name__, before, after))
    left = tuple((g.name, "; ".join(g.reasons)) for g in graph.groups
                 if g.producers and not g.prunable)
    report = ShrinkReport(tuple(rows), model.count_params(), small.count_params(),
                          model_macs(model), model_macs(small), left)
    return small, report


def _order(model: keras.Model) -> dict[int, int]:
    layers = _graph.all_layers(model)
    return {id(layer): i for i, layer in enumerate(layers)}
