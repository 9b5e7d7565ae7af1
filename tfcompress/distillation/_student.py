"""`make_student`: a smaller, faster copy of a teacher, the starting point of a student.

Two structural changes, each optional:

- channels: remove a fraction of every channel group's output channels (lowest L1 filter norm
  first) and rebuild thinner layers, as channel pruning + `shrink` would;
- pooling folded into strides: a stride-1 convolution followed (through BatchNormalization and
  activations) by a 2x2 pooling becomes a stride-2 convolution with no pooling, as in the
  all-convolutional network (Springenberg et al., 2015). The convolution then computes a quarter
  of the pixels. This matters most for int8 on CPUs: on a high-resolution stem with few input
  channels, XNNPACK's int8 kernels cost several times their float cost per output pixel, and
  that one layer can bound the whole model's latency.

Neither change keeps the teacher's outputs: the student starts from the teacher's weights and
is trained, typically by distilling the teacher into it.
"""

from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from tfcompress import _graph, _legacy, _options
from tfcompress._macs import SizeRatios, model_macs

_L = keras.layers
_CONVS = (_L.Conv2D, _L.DepthwiseConv2D)
_POOLS = (_L.MaxPooling2D, _L.AveragePooling2D)
# Layers that act on each pixel alone: between a convolution and its pooling, they work the
# same on the strided convolution's (fewer) pixels.
_PER_PIXEL = (_L.BatchNormalization, _L.ReLU, _L.Activation, _L.LeakyReLU, _L.ELU, _L.Dropout)


@dataclass(frozen=True)
class StudentReport(SizeRatios):
    """What `make_student` changed: channels removed, poolings folded, sizes before and after."""

    channels: float
    folded: tuple[tuple[str, str], ...]
    not_folded: tuple[tuple[str, str], ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    def to_dict(self) -> dict:
        return {"channels": self.channels,
                "folded": [{"conv": c, "pooling": p} for c, p in self.folded],
                "not_folded": [{"pooling": p, "reason": r} for p, r in self.not_folded],
                **self.size_dict()}

    def __str__(self) -> str:
        rows = [f"channels removed: {self.channels:.0%}"]
        rows += [f"folded: {p} into {c} (stride)" for c, p in self.folded]
        rows += [f"not folded: {p} ({r})" for p, r in self.not_folded]
        rows.append(self.size_line())
        return "\n".join(rows)


def make_student(
    teacher: keras.Model,
    channels: float = _options.STUDENT["channels"],
    *,
    fold_pooling: bool = _options.STUDENT["fold_pooling"],
    round_to: int = 8,
    return_report: bool = False,
) -> "keras.Model | tuple[keras.Model, StudentReport]":
    """Builds a smaller student from a teacher: fewer channels, optionally pooling as strides.

    The student keeps the teacher's layers and weights where they survive: the channels with
    the largest L1 filter norms (coupled channels, through BatchNormalization, depthwise
    convs, residual additions and concatenations, are removed together) and, with
    `fold_pooling`, each Conv2D/DepthwiseConv2D that is followed by a `MaxPooling2D` or
    `AveragePooling2D` (only BatchNormalization, activations or Dropout in between) gets the
    pooling's stride and the pooling is removed. A pooling is folded only where that is sound:
    the convolution has stride 1 and no dilation, its kernel is at least as large as the
    stride (so every input pixel is still read), nothing else reads the tensors in between,
    and the strided convolution gives the pooling's output shape. The others are listed in
    the report with the reason. Train the student afterwards, e.g. with `distill`.

    Args:
        teacher: A functional or Sequential model; not modified.
        channels: Fraction of each channel group's channels to remove, in `[0, 1)`.
            Defaults to `0.5`.
        fold_pooling: Fold 2-D poolings into the stride of the convolution before them.
            Defaults to `False`.
        round_to: Keep channel counts at multiples of this (int8 kernels run fastest on
            multiples of 8). Defaults to `8`.
        return_report: Also return a `StudentReport`. Defaults to `False`.

    Returns:
        The student (uncompiled); with `return_report`, `(student, report)`.

    Raises:
        ValueError: If `channels` is out of range, or the student would be the teacher
            unchanged (no channel can be removed and no pooling folded).
        TypeError: If `teacher` is subclassed.

    Example:
        >>> from tfcompress.reference import reference_cnn
        >>> student, report = make_student(reference_cnn(), 0.5, fold_pooling=True,
        ...                                return_report=True)
        >>> report.folded, student.get_layer("conv1").strides
        ((('conv1', 'pool1'),), (2, 2))
    """
    teacher = _legacy.keras3(teacher)  # a Keras 2 (tf_keras) model is carried over
    if not 0 <= channels < 1:
        raise ValueError(f"channels is the fraction of channels to remove, in [0, 1); got "
                         f"{channels}.")
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}.")
    _graph.require_functional(teacher, "make_student")
    student = _thin(teacher, channels, round_to) if channels > 0 else teacher
    folded: tuple = ()
    not_folded: tuple = ()
    if fold_pooling:
        student, folded, not_folded = _fold(student)
    if student is teacher:
        why = ["channels is 0" if channels == 0 else "it has no channel that can be removed"]
        if fold_pooling:
            why.append("no pooling can be folded"
                       + "".join(f"; {p}: {r}" for p, r in not_folded))
        fixes = [f for f, needed in (("channels > 0", channels == 0),
                                     ("fold_pooling=True", not fold_pooling)) if needed]
        raise ValueError(
            f"make_student would return {teacher.name!r} unchanged: {', and '.join(why)}. "
            + (f"Pass {' or '.join(fixes)}, or bring" if fixes else "Bring")
            + " a student model of your own."
        )
    student = keras.Model(student.inputs, student.outputs, name=f"{teacher.name}_student")
    if not return_report:
        return student
    report = StudentReport(float(channels), folded, not_folded, teacher.count_params(),
                           student.count_params(), model_macs(teacher), model_macs(student))
    return student, report


def _thin(model: keras.Model, ratio: float, round_to: int) -> keras.Model:
    """A copy of `model` with `ratio` of each prunable channel group removed (lowest L1 norm
    first), physically shrunk; `model` itself if no group can be pruned."""
    from tfcompress.pruning import _channels, shrink

    with _graph.copying_loaded_code():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    graph = _channels.ChannelGraph(copy)
    groups = [g for g in graph.groups if g.prunable]
    if not groups:
        return model
    keep = {g.id: _channels.channel_keep(_channels.l1_norm(graph, g), ratio, round_to)
            for g in groups}
    for entry in graph.channel_weights():
        ref = entry[0]
        value = ops.convert_to_numpy(ref.variable)
        ref.variable.assign(value * graph.weight_mask(*entry, keep).astype(value.dtype))
    return shrink(copy)


def _fold(model: keras.Model) -> tuple[keras.Model, tuple, tuple]:
    """`model` with foldable poolings folded into the stride of their convolution."""
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
