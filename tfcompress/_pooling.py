"""Pooling folded into a convolution's stride: a graph transform on top of `_graph`.

A stride-1 convolution followed (through BatchNormalization and activations) by a pooling
whose size equals its stride becomes a strided convolution with no pooling, as in the
all-convolutional network (Springenberg et al., 2015), where that is sound. Used by
`make_student(fold_pooling=True)`.
"""

from typing import Any

import keras

from tfcompress import _graph

_L = keras.layers
_CONVS = (_L.Conv2D, _L.DepthwiseConv2D)
_POOLS = (_L.MaxPooling2D, _L.AveragePooling2D)
# Layers that act on each pixel alone: between a convolution and its pooling, they work the
# same on the strided convolution's (fewer) pixels.
_PER_PIXEL = (_L.BatchNormalization, _L.ReLU, _L.Activation, _L.LeakyReLU, _L.ELU, _L.Dropout)


def fold_pooling(model: keras.Model) -> tuple[keras.Model, tuple, tuple]:
    """`(model with foldable poolings folded into the stride of their convolution,
    ((conv, pooling) folded...), ((pooling, why not)...))`; `model` itself if none folds."""
    graph = _graph.Graph(model)
    conv_stride: dict[int, tuple[int, int]] = {}  # id(conv layer) -> new strides
    dropped: set[int] = set()  # id(pooling node)
    folded, not_folded = [], []
    for node in _graph.all_nodes(model):
        pool = node.operation
        if not isinstance(pool, _POOLS):
            continue
        conv_node, reason = _conv_before(graph, node)
        if reason is None:
            reason = _fold_problem(conv_node, node)
        if reason is not None:
            not_folded.append((pool.name, reason))
            continue
        conv_stride[id(conv_node.operation)] = tuple(pool.strides)
        dropped.add(id(node))
        folded.append((conv_node.operation.name, pool.name))
    if not folded:
        return model, (), tuple(not_folded)

    def visit(node: Any, args: tuple, kwargs: dict) -> Any:
        if id(node) in dropped:
            return args[0]
        op = node.operation
        if id(op) in conv_stride:
            new = type(op).from_config({**op.get_config(), "strides": conv_stride[id(op)]})
            out = new(*args, **kwargs)
            new.set_weights(op.get_weights())
            return out
        return None

    return _graph.rebuild(model, visit, model.name), tuple(folded), tuple(not_folded)


def _conv_before(graph: _graph.Graph, pool_node: Any) -> tuple[Any, str | None]:
    """The convolution node feeding `pool_node` through per-pixel layers, or why there is
    none."""
    node = pool_node
    while True:
        source = node.input_tensors[0] if len(node.input_tensors) == 1 else None
        if source is None:
            return None, "its input is not one tensor"
        producer_node = graph.producer(source)
        if producer_node is None:
            return None, "it reads a model input"
        producer = producer_node.operation
        if graph.single_consumer(source) is not node:
            return None, f"the output of {producer.name!r} is also read elsewhere"
        if isinstance(producer, _CONVS):
            return producer_node, None
        if not isinstance(producer, _PER_PIXEL) or _graph.call_count(producer) != 1:
            return None, (f"it follows {type(producer).__name__} {producer.name!r}, not a "
                          "convolution (through BatchNormalization or activations)")
        node = producer_node


def _fold_problem(conv_node: Any, pool_node: Any) -> str | None:
    """Why the pooling cannot become the convolution's stride, or `None` if it can."""
    conv, pool = conv_node.operation, pool_node.operation
    name = f"{type(conv).__name__} {conv.name!r}"
    if _graph.call_count(conv) != 1:
        return f"{name} is shared"
    if tuple(conv.strides) != (1, 1) or tuple(conv.dilation_rate) != (1, 1):
        return f"{name} already has a stride or dilation"
    if tuple(pool.pool_size) != tuple(pool.strides):
        return "its pool size differs from its stride"
    if pool.data_format != conv.data_format:
        return "it and the convolution use different data formats"
    if any(k < s for k, s in zip(conv.kernel_size, pool.strides, strict=True)):
        return (f"{name} has a {conv.kernel_size} kernel, smaller than the stride "
                f"{pool.strides}: some input pixels would never be read")
    strided = type(conv).from_config({**conv.get_config(), "strides": tuple(pool.strides)})
    got = tuple(strided.compute_output_shape(conv_node.input_tensors[0].shape))
    want = tuple(pool_node.outputs[0].shape)
    if got[1:] != want[1:]:
        return f"a strided {conv.name!r} would give shape {got[1:]}, the pooling {want[1:]}"
    return None
