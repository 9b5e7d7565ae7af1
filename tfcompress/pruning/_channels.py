"""Which output channels of a functional Keras model are coupled, and can be removed together.

One walk over the graph (nested models inlined) gives every tensor a *layout*: which channel
group each index of its last axis belongs to. A Conv/Dense layer starts a new group with its
output channels (its *producers*). DepthwiseConv2D and BatchNormalization carry their input's
channels through, with weights per channel (*members*). Pooling, activations, padding and
dropout pass layouts through; Flatten repeats a layout once per spatial position; Concatenate
joins layouts by offset; Add/Multiply (residuals, squeeze-excite) merge the groups of their
inputs into one. A layer that reads the channels (Conv/Dense input side, through Flatten) is a
*consumer*: when a group's channel goes, the consumer loses that input row.

A group is left whole, with the reason recorded, when it reaches the model output, feeds a
layer we cannot shrink (Reshape, Softmax over channels, LayerNormalization, ...), comes from the
model input, or reaches a consumer with a non-zero value where its channel is masked (e.g. a
sigmoid applied to a masked channel without a multiplication that zeroes it again).

Masking a channel zeroes the producers' kernel slice and bias and the members' per-channel
parameters (depthwise bias, BatchNormalization gamma and beta), so the channel is exactly zero
downstream; `shrink` then removes such dead channels without changing the model's outputs.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress import _graph

_L = keras.layers

# Layers that keep the channel axis as it is (value-wise or pooling).
_PASSTHROUGH: tuple[type, ...] = (
    _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D,
    _L.GaussianNoise, _L.GaussianDropout, _L.AlphaDropout, _L.Identity,
    _L.ActivityRegularization, _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D,
    _L.AveragePooling1D, _L.AveragePooling2D, _L.AveragePooling3D, _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D, _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D, _L.ZeroPadding1D, _L.ZeroPadding2D,
    _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D, _L.UpSampling1D,
    _L.UpSampling2D, _L.UpSampling3D, _L.Resizing,
)
_MERGE: tuple[type, ...] = (_L.Add, _L.Subtract, _L.Average, _L.Maximum, _L.Minimum, _L.Multiply)
_CONVS: tuple[type, ...] = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
# Activations with f(0) == 0: a masked (zero) channel stays zero through them.
_ZERO_AT_ZERO = {"linear", "relu", "relu6", "elu", "selu", "tanh", "swish", "silu", "gelu",
                 "leaky_relu", "hard_swish", "hard_silu", "softsign", "mish", "celu",
                 "sparse_plus", "squareplus", "hard_tanh", "hard_shrink", "soft_shrink",
                 "tanh_shrink", "threshold"}
# keras.ops on symbolic tensors (e.g. MobileNetV3's hard-swish) that keep the channel axis.
_OP_KEEPS_ZERO = {"Relu", "Relu6", "HardSwish", "HardSilu", "Silu", "Swish", "Gelu", "Tanh",
                  "Elu", "Selu", "LeakyRelu", "Multiply", "Divide", "TrueDivide", "Identity"}
_OP_BREAKS_ZERO = {"Sigmoid", "HardSigmoid", "Softplus", "Exp", "Add", "Subtract"}

LAYER_KINDS = ("keeps_zero", "keeps_channels")
_registry: dict[type, str] = {}


def register_layer(layer_class: type, kind: str) -> None:
    """Tells channel pruning how a layer class it does not know treats the channel axis.

    Unknown layers leave the channel groups that reach them whole (nothing is removed there).
    A registered class passes its input's channels through instead, so they can be pruned
    across it and removed by `shrink`.

    Args:
        layer_class: A `keras.layers.Layer` subclass with one input, whose output has the
            input's channels on the last axis (each output channel computed from the same
            input channel only).
        kind: `"keeps_zero"` (a zero channel stays zero: a ReLU-like activation, a pooling) or
            `"keeps_channels"` (it does not: e.g. `x + 1` or a sigmoid; a channel can then
            only be removed where a later multiplication zeroes it again).

    Raises:
        ValueError: For another `kind`.
    """
    if kind not in LAYER_KINDS:
        raise ValueError(f"kind must be one of {LAYER_KINDS}, got {kind!r}.")
    _registry[layer_class] = kind


@dataclass
class Segment:
    """`length` channels of group `group`, starting at its channel `start`."""

    group: int
    start: int
    length: int


@dataclass
class Layout:
    """The channel layout of a tensor's last axis.

    `segments` in order make up `C` channels; after a Flatten the axis is `repeat * C` long,
    channel-minor (index `p * C + c`). `zero` says whether masked channels are exactly zero.
    """

    segments: list[Segment]
    repeat: int = 1
    zero: bool = True

    @property
    def channels(self) -> int:
        return sum(s.length for s in self.segments)


@dataclass
class WeightRef:
    """A per-channel weight of a producer or member: the variable and its channel axis."""

    layer: Any
    attribute: str
    variable: Any
    axis: int


@dataclass
class ChannelGroup:
    """Channels that must be removed together, and every layer they touch.

    Attributes:
        id: Group id.
        size: Number of channels.
        producers: Conv/Dense layers whose output channels these are.
        members: DepthwiseConv2D/BatchNormalization layers that carry them, with their layout.
        consumers: Layers that read them, with the layout of their input.
        reasons: Why the group must stay whole; empty when it can be pruned.
    """

    id: int
    size: int
    producers: list[Any] = field(default_factory=list)
    members: list[tuple[Any, Layout]] = field(default_factory=list)
    consumers: list[tuple[Any, Layout]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.reasons and bool(self.producers)

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.producers) or f"group{self.id}"


def _activation_keeps_zero(layer: Any) -> bool:
    act = getattr(layer, "activation", None)
    if act is None:
        return True
    name = getattr(act, "__name__", str(act))
    return name in _ZERO_AT_ZERO


def _is_conv(layer: Any) -> bool:
    return (isinstance(layer, _CONVS) and not isinstance(layer, (_L.Conv1DTranspose,
                                                                 _L.Conv2DTranspose,
                                                                 _L.Conv3DTranspose))
            and getattr(layer, "groups", 1) == 1
            and getattr(layer, "data_format", "channels_last") == "channels_last")


_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)


def _is_separable(layer: Any) -> bool:
    return isinstance(layer, _SEPARABLE) and layer.data_format == "channels_last"


def output_kernel(layer: Any) -> Any:
    """The kernel whose last axis is a producer's output channels (a separable conv's
    pointwise kernel)."""
    return layer.pointwise_kernel if isinstance(layer, _SEPARABLE) else layer.kernel


def _per_channel(layer: Any, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    out = []
    for name in names:
        var = getattr(layer, name, None)
        if isinstance(var, keras.Variable):
            out.append((name, var))
    return out


class ChannelGraph:
    """The channel groups of a functional model (see the module docstring).

    Args:
        model: A functional or Sequential model (nested models are inlined).
        selected: Predicate on a producer layer; a group with an unselected producer is left
            whole. Defaults to `None` (all).
    """

    def __init__(self, model: keras.Model, selected: Callable[[Any], bool] | None = None):
        _graph.require_functional(model, "Channel pruning")
        self.model = model
        self._parent: dict[int, int] = {}
        self._groups: dict[int, ChannelGroup] = {}
        self._layouts: dict[int, Layout] = {}
        self.in_layouts: dict[int, Layout] = {}  # id(layer) -> layout of its input
        self.out_layouts: dict[int, Layout] = {}  # id(layer) -> layout of its output
        self._calls: dict[int, int] = {}
        graph = _graph.functional(model)
        for t in graph.inputs:
            self._layouts[id(t)] = self._fixed_layout(t, "comes from the model input")
        self._walk(graph)
        for t in graph.outputs:
            self._fix(self._layouts[id(t)], "reaches the model output")
        for layer_id, count in self._calls.items():
            if count > 1:
                for layout in (self.in_layouts.get(layer_id), self.out_layouts.get(layer_id)):
                    if layout is not None:
                        self._fix(layout, "passes through a layer that is called more than once")
        if selected is not None:
            for group in self.groups:
                if not all(selected(p) for p in group.producers):
                    group.reasons.append("not selected (layers=/exclude=)")

    # -- union-find over group ids -----------------------------------------------------------

    def find(self, gid: int) -> int:
        while self._parent[gid] != gid:
            self._parent[gid] = self._parent[self._parent[gid]]
            gid = self._parent[gid]
        return gid

    def _new_group(self, size: int) -> int:
        gid = len(self._parent)
        self._parent[gid] = gid
        self._groups[gid] = ChannelGroup(gid, size)
        return gid

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self._groups[ra], self._groups.pop(rb)
        ga.producers += gb.producers
        ga.members += gb.members
        ga.consumers += gb.consumers
        ga.reasons += gb.reasons
        self._parent[rb] = ra

    def group(self, gid: int) -> ChannelGroup:
        return self._groups[self.find(gid)]

    @property
    def groups(self) -> list[ChannelGroup]:
        return [self._groups[g] for g in sorted(self._groups)]

    # -- the walk ----------------------------------------------------------------------------

    def _fixed_layout(self, tensor: Any, reason: str) -> Layout:
        gid = self._new_group(int(tensor.shape[-1]) if tensor.shape else 1)
        self._groups[gid].reasons.append(reason)
        return Layout([Segment(gid, 0, self._groups[gid].size)])

    def _fix(self, layout: Layout, reason: str) -> None:
        for seg in layout.segments:
            group = self.group(seg.group)
            if reason not in group.reasons:
                group.reasons.append(reason)

    def _walk(self, model: Any) -> None:
        for node in _graph.nodes(model):
            if node.is_input:
                continue
            op = node.operation
            ins = [self._layouts[id(t)] for t in node.input_tensors]
            if _graph.is_functional(op):
                inner = _graph.functional(op)
                for ref, layout in zip(inner.inputs, ins, strict=True):
                    self._layouts[id(ref)] = layout
                self._walk(inner)
                outs = [self._layouts[id(t)] for t in inner.outputs]
            else:
                self._calls[id(op)] = self._calls.get(id(op), 0) + 1
                outs = self._visit(node, op, ins)
            for ref, layout in zip(node.outputs, outs, strict=True):
                self._layouts[id(ref)] = layout

    def _visit(self, node: Any, op: Any, ins: list[Layout]) -> list[Layout]:
        name = getattr(op, "name", type(op).__name__)
        if ins:
            self.in_layouts[id(op)] = ins[0]
        out = self._visit_layout(node, op, ins, name)
        self.out_layouts[id(op)] = out
        return [out] + [self._fixed_layout(t, f"output of {name!r}") for t in node.outputs[1:]]

    def _visit_layout(self, node: Any, op: Any, ins: list[Layout], name: str) -> Layout:
        kind = next((k for cls, k in _registry.items() if isinstance(op, cls)), None)
        if kind is not None and len(ins) == 1:
            return Layout(list(ins[0].segments), ins[0].repeat,
                          ins[0].zero and kind == "keeps_zero")
        if (_is_conv(op) or _is_separable(op) or isinstance(op, _L.Dense)) and len(ins) == 1:
            x = ins[0]
            if x.repeat > 1 and not isinstance(op, _L.Dense):
                self._fix(x, f"flattened into {name!r}")
            self._consume(op, x)  # a separable conv's depthwise half has no bias: 0 stays 0
            gid = self._new_group(int(output_kernel(op).shape[-1]))
            self._groups[gid].producers.append(op)
            return Layout([Segment(gid, 0, self._groups[gid].size)],
                          zero=_activation_keeps_zero(op))
        if isinstance(op, _L.DepthwiseConv2D) and len(ins) == 1 and ins[0].repeat == 1 and \
                op.depth_multiplier == 1 and op.data_format == "channels_last":
            self._add_member(op, ins[0])
            return Layout(list(ins[0].segments), zero=ins[0].zero and _activation_keeps_zero(op))
        if isinstance(op, _L.BatchNormalization) and len(ins) == 1 and ins[0].repeat == 1 and \
                op.axis in (-1, len(node.input_tensors[0].shape) - 1):
            self._add_member(op, ins[0])
            return Layout(list(ins[0].segments), zero=True)  # gamma = beta = 0 where masked
        if isinstance(op, _PASSTHROUGH) and len(ins) == 1:
            return Layout(list(ins[0].segments), ins[0].repeat, ins[0].zero)
        if isinstance(op, (_L.ReLU, _L.LeakyReLU, _L.ELU)) and len(ins) == 1:
            keeps = not isinstance(op, _L.ReLU) or float(op.threshold) == 0.0
            return Layout(list(ins[0].segments), ins[0].repeat, ins[0].zero and keeps)
        if isinstance(op, _L.Activation) and len(ins) == 1 and \
                getattr(op.activation, "__name__", "") not in ("softmax", "log_softmax"):
            return Layout(list(ins[0].segments), ins[0].repeat,
                          ins[0].zero and _activation_keeps_zero(op))
        if isinstance(op, _L.Flatten) and len(ins) == 1 and ins[0].repeat == 1:
            shape = node.input_tensors[0].shape
            positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            return Layout(list(ins[0].segments), positions, ins[0].zero)
        if isinstance(op, _L.Concatenate) and op.axis in (-1, len(node.outputs[0].shape) - 1) \
                and all(x.repeat == 1 for x in ins):
            return Layout([s for x in ins for s in x.segments], zero=all(x.zero for x in ins))
        if isinstance(op, _MERGE) and len(ins) >= 2:
            return self._merge(op, ins, name, multiply=isinstance(op, _L.Multiply))
        if not isinstance(op, keras.layers.Layer):
            layout = self._keras_op(node, op, ins, name)
            if layout is not None:
                return layout
        for x in ins:
            self._fix(x, f"feeds {name!r} ({type(op).__name__}), which cannot be shrunk")
        return self._fixed_layout(node.outputs[0], f"output of {name!r} ({type(op).__name__})")

    def _keras_op(self, node: Any, op: Any, ins: list[Layout], name: str) -> Layout | None:
        kind = type(op).__name__
        tensors = node.input_tensors
        if len(ins) == 1 and len(tensors) == 1:
            if kind in _OP_KEEPS_ZERO:
                return Layout(list(ins[0].segments), ins[0].repeat, ins[0].zero)
            if kind in _OP_BREAKS_ZERO:
                return Layout(list(ins[0].segments), ins[0].repeat, False)
            return None
        if kind in ("Add", "Multiply", "Subtract", "Maximum", "Minimum") and len(ins) >= 2:
            return self._merge(op, ins, name, multiply=kind == "Multiply")
        return None

    def _merge(self, op: Any, ins: list[Layout], name: str, multiply: bool) -> Layout:
        wide = [x for x in ins if x.channels * x.repeat > 1]
        if multiply and len(wide) == 1:  # a per-position scalar times a tensor
            x = wide[0]
            return Layout(list(x.segments), x.repeat, any(y.zero for y in ins))
        first = ins[0]
        simple = all(len(x.segments) == 1 and x.repeat == 1 and x.segments[0].start == 0 and
                     x.segments[0].length == self.group(x.segments[0].group).size
                     for x in ins)
        if not simple or len({x.channels for x in ins}) != 1:
            for x in ins:
                self._fix(x, f"joined by {name!r} with a differently laid out input")
            return Layout(list(first.segments), first.repeat,
                          any(x.zero for x in ins) if multiply else all(x.zero for x in ins))
        for x in ins[1:]:
            self._union(first.segments[0].group, x.segments[0].group)
        zero = any(x.zero for x in ins) if multiply else all(x.zero for x in ins)
        return Layout(list(first.segments), 1, zero)

    def _consume(self, op: Any, x: Layout) -> None:
        for seg in x.segments:
            self.group(seg.group).consumers.append((op, x))
        if not x.zero:
            self._fix(x, f"is not zero where masked when it reaches {op.name!r}")

    def _add_member(self, op: Any, x: Layout) -> None:
        for seg in {s.group: s for s in x.segments}.values():
            self.group(seg.group).members.append((op, x))

    # -- per-channel weights -----------------------------------------------------------------

    def producer_weights(self, layer: Any) -> list[WeightRef]:
        """Kernel (last axis; a separable conv's pointwise kernel) and bias of a producer."""
        return [WeightRef(layer, n, v, -1 if n.endswith("kernel") else 0)
                for n, v in _per_channel(layer, ("kernel", "pointwise_kernel", "bias"))]

    def member_weights(self, layer: Any) -> list[WeightRef]:
        """The per-channel weights that must be zero for a masked channel to stay zero."""
        if isinstance(layer, _L.DepthwiseConv2D):
            return [WeightRef(layer, n, v, -2 if n == "kernel" else 0)
                    for n, v in _per_channel(layer, ("kernel", "bias"))]
        return [WeightRef(layer, n, v, 0) for n, v in _per_channel(layer, ("gamma", "beta"))]

    def channel_weights(self) -> list[tuple[WeightRef, int | None, Layout | None]]:
        """Every per-channel weight of the prunable groups, once: `(ref, group_id, None)` for a
        producer's, `(ref, None, layout)` for a member's (a member of two groups after a
        Concatenate is listed once, with its whole layout)."""
        out: list[tuple[WeightRef, int | None, Layout | None]] = []
        seen: set[int] = set()
        for group in self.groups:
            if not group.prunable:
                continue
            entries = [(ref, group.id, None) for layer in group.producers
                       for ref in self.producer_weights(layer)]
            entries += [(ref, None, layout) for layer, layout in group.members
                        for ref in self.member_weights(layer)]
            for entry in entries:
                if id(entry[0].variable) not in seen:
                    seen.add(id(entry[0].variable))
                    out.append(entry)
        return out

    def weight_mask(self, ref: WeightRef, group_id: int | None, layout: Layout | None,
                    keep: dict[int, np.ndarray]) -> np.ndarray:
        """The 0/1 mask of one entry of `channel_weights` for the keep vectors `keep`."""
        vector = keep[group_id] if layout is None else self.layout_keep(layout, keep)
        shape = [1] * len(ref.variable.shape)
        shape[ref.axis] = len(vector)
        return np.broadcast_to(vector.reshape(shape), ref.variable.shape)

    def layout_keep(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """The keep vector (bool) over a layout's channels (one spatial position)."""
        parts = []
        for seg in layout.segments:
            k = keep.get(self.find(seg.group))
            parts.append(np.ones(seg.length, bool) if k is None
                         else k[seg.start:seg.start + seg.length])
        return np.concatenate(parts) if parts else np.ones(0, bool)

    def layout_indices(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Kept indices of a tensor's last axis (Flatten repeats included)."""
        per = self.layout_keep(layout, keep)
        c = len(per)
        return np.concatenate([p * c + np.flatnonzero(per) for p in range(layout.repeat)])


# -- criteria ----------------------------------------------------------------------------------


def _norm_scores(graph: ChannelGraph, group: ChannelGroup, order: int) -> np.ndarray:
    scores = np.zeros(group.size)
    for layer in group.producers:
        k = np.abs(ops.convert_to_numpy(output_kernel(layer))).reshape(-1, group.size)
        scores += (k ** order).sum(axis=0) ** (1.0 / order)
    return scores


def l1_norm(graph: ChannelGraph, group: ChannelGroup) -> np.ndarray:
    """Sum over the group's producers of each output filter's L1 norm."""
    return _norm_scores(graph, group, 1)


def l2_norm(graph: ChannelGraph, group: ChannelGroup) -> np.ndarray:
    """Sum over the group's producers of each output filter's L2 norm."""
    return _norm_scores(graph, group, 2)


def bn_scale(graph: ChannelGraph, group: ChannelGroup) -> np.ndarray:
    """Sum of |gamma| of the BatchNormalization layers that directly carry the group
    (Network Slimming); groups without one fall back to the L1 norm."""
    scores = np.zeros(group.size)
    found = False
    for layer, layout in group.members:
        if isinstance(layer, _L.BatchNormalization) and layer.scale and \
                len(layout.segments) == 1 and layout.segments[0].length == group.size:
            scores += np.abs(ops.convert_to_numpy(layer.gamma))
            found = True
    return scores if found else l1_norm(graph, group)


Criterion = Callable[[ChannelGraph, ChannelGroup], np.ndarray]
CRITERIA: dict[str, Criterion] = {"l1": l1_norm, "l2": l2_norm, "bn_scale": bn_scale}


def get_criterion(criterion: "str | Criterion") -> Criterion:
    if callable(criterion):
        return criterion
    if criterion not in CRITERIA:
        raise ValueError(
            f"Unknown channel criterion {criterion!r}; expected one of {sorted(CRITERIA)} or a "
            "function (graph, group) -> scores of shape (group.size,)."
        )
    return CRITERIA[criterion]


def _kept_count(n: int, sparsity: float, round_to: int) -> int:
    """Channels to keep: `n - round(sparsity * n)`, rounded to the nearest multiple of
    `round_to` (at least `round_to`, at most `n`), never fewer than one."""
    keep = n - round(sparsity * n)
    if round_to > 1:
        keep = max(round_to, round_to * round(keep / round_to))
    return int(min(n, max(1, keep)))


def channel_keep(scores: np.ndarray, sparsity: float, round_to: int = 1) -> np.ndarray:
    """Keeps all but the `round(sparsity * n)` lowest-scoring channels (at least one).

    With `round_to`, the number kept is rounded to a multiple of it (int8 kernels run fastest
    on channel counts that are multiples of 4, 8 or 16).

    Examples:
        >>> channel_keep(np.array([0.3, 0.1, 0.9, 0.2]), 0.5).tolist()
        [True, False, True, False]
    """
    n = len(scores)
    k = n - _kept_count(n, sparsity, round_to)
    keep = np.ones(n, bool)
    if k > 0:
        keep[np.argsort(scores, kind="stable")[:k]] = False
    return keep


def global_channel_keep(scores: list[np.ndarray], sparsity: float,
                        round_to: int = 1) -> list[np.ndarray]:
    """One threshold across groups on scores divided by their group's mean; at least one
    channel is kept per group, and with `round_to` each group's count is rounded as in
    `channel_keep`."""
    normed = [s / max(float(np.mean(s)), 1e-12) for s in scores]
    flat = np.concatenate(normed) if normed else np.zeros(0)
    k = min(len(flat), max(0, round(sparsity * len(flat))))
    if k == 0:
        return [np.ones(len(s), bool) for s in scores]
    threshold = np.sort(flat, kind="stable")[k - 1]
    keeps = []
    for s in normed:
        n_keep = int(np.count_nonzero(s > threshold))
        n_keep = _kept_count(len(s), 1.0 - n_keep / len(s), round_to)
        keep = np.zeros(len(s), bool)
        keep[np.argsort(-s, kind="stable")[:n_keep]] = True
        keeps.append(keep)
    return keeps
