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

import keras
from keras import ops

from tfcompress import _graph, _legacy, _options, _pooling
from tfcompress._macs import SizeRatios, model_macs

_L = keras.layers


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
    input_downscale: int = 1,
    return_report: bool = False,
) -> "keras.Model | tuple[keras.Model, StudentReport]":
    """Builds a smaller student from a teacher: fewer channels, optionally pooling as strides
    and a lower working resolution.

    The student keeps the teacher's layers and weights where they survive: the channels with
    the largest L1 filter norms (coupled channels, through BatchNormalization, depthwise
    convs, residual additions and concatenations, are removed together) and, with
    `fold_pooling`, each Conv2D/DepthwiseConv2D that is followed by a `MaxPooling2D` or
    `AveragePooling2D` (only BatchNormalization, activations or Dropout in between) gets the
    pooling's stride and the pooling is removed. A pooling is folded only where that is sound:
    the convolution has stride 1 and no dilation, its kernel is at least as large as the
    stride (so every input pixel is still read), nothing else reads the tensors in between,
    and the strided convolution gives the pooling's output shape. The others are listed in
    the report with the reason. With `input_downscale`, the student averages the input over
    `input_downscale` x `input_downscale` pixels first (an `AveragePooling2D` named
    `input_downscale`) and runs every layer at that lower resolution: it still takes the
    teacher's images, and its first layers, which dominate an NPU's time at high resolution,
    cost a fraction. Train the student afterwards, e.g. with `distill`.

    Args:
        teacher: A functional or Sequential model; not modified.
        channels: Fraction of each channel group's channels to remove, in `[0, 1)`.
            Defaults to `0.5`.
        fold_pooling: Fold 2-D poolings into the stride of the convolution before them.
            Defaults to `False`.
        round_to: Keep channel counts at multiples of this (int8 kernels run fastest on
            multiples of 8). Defaults to `8`.
        input_downscale: Run the student at the input's resolution divided by this (1: the
            same). Needs an image model whose outputs do not depend on the input's size (a
            global pooling before the head) and whose input size it divides. Defaults to
            `1`.
        return_report: Also return a `StudentReport`. Defaults to `False`.

    Returns:
        The student (uncompiled); with `return_report`, `(student, report)`.

    Raises:
        ValueError: If `channels` is out of range, or the student would be the teacher
            unchanged (no channel can be removed and no pooling folded).
        TypeError: If `teacher` is subclassed.

    Examples:
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
    if isinstance(input_downscale, bool) or not isinstance(input_downscale, int) or \
            input_downscale < 1:
        raise ValueError(f"input_downscale must be a whole number >= 1, got "
                         f"{input_downscale!r}.")
    _graph.require_functional(teacher, "make_student")
    student = _thin(teacher, channels, round_to) if channels > 0 else teacher
    folded: tuple = ()
    not_folded: tuple = ()
    if fold_pooling:
        student, folded, not_folded = _pooling.fold_pooling(student)
    if input_downscale > 1:
        student = _downscaled(student, input_downscale, teacher)
    if student is teacher:
        why = ["channels is 0" if channels == 0 else "it has no channel that can be removed"]
        if fold_pooling:
            why.append("no pooling can be folded"
                       + "".join(f"; {p}: {r}" for p, r in not_folded))
        fixes = [f for f, needed in (("channels > 0", channels == 0),
                                     ("fold_pooling=True", not fold_pooling),
                                     ("input_downscale=2", True)) if needed]
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


def _downscaled(model: keras.Model, factor: int, teacher: keras.Model) -> keras.Model:
    """`model`'s layers (copies, same weights) run on its input averaged over `factor` x
    `factor` pixels; one line where the network cannot run at the lower resolution."""
    inputs = _graph.new_inputs(model)
    shape = tuple(inputs[0].shape)
    if len(inputs) != 1 or len(shape) != 4 or None in shape[1:3]:
        raise ValueError(f"input_downscale takes a model with one image input of known size, "
                         f"got inputs {[tuple(t.shape) for t in inputs]}.")
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(f"input_downscale={factor} does not divide the input's size "
                         f"{shape[1]}x{shape[2]}; pick a factor that does.")
    pooled = keras.layers.AveragePooling2D(factor, name="input_downscale")(inputs[0])
    try:
        outputs = _graph.Rebuilder(lambda node, args, kwargs: None).run(model, [pooled])
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"input_downscale={factor}: {teacher.name!r} cannot run at "
            f"{shape[1] // factor}x{shape[2] // factor} ({first}); it needs layers that do "
            "not depend on the input's size, such as a global pooling before the head."
        ) from None
    changed = [(tuple(a.shape[1:]), tuple(b.shape[1:]))
               for a, b in zip(teacher.outputs, outputs, strict=True)
               if tuple(a.shape[1:]) != tuple(b.shape[1:])]
    if changed:
        raise ValueError(
            f"input_downscale={factor} would change {teacher.name!r}'s output shape "
            f"{changed[0][0]} to {changed[0][1]} (its outputs follow the input's size); "
            "use it for models that pool globally before their head.")
    return _graph.as_model(inputs, outputs, model.name)


def _thin(model: keras.Model, ratio: float, round_to: int) -> keras.Model:
    """A copy of `model` with `ratio` of each prunable channel group removed (lowest L1 norm
    first), physically shrunk; `model` itself if no group can be pruned."""
    from tfcompress.pruning import _channels, shrink

    with _graph.copying_loaded_code():
        copy = keras.models.clone_model(model)
    _graph.set_weights(copy, model.get_weights())
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
