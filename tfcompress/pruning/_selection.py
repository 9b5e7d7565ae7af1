"""Which weights of a Keras model can be pruned, and how users pick among them."""

import math
from dataclasses import dataclass
from typing import Any

import keras

from tfcompress import _graph

# (layer class, [(weight attribute, N:M reduction axis or None), ...]). The reduction axis is the
# input-channel axis the N:M groups run along; depthwise kernels have none.
_PRUNABLE: tuple[tuple[type, tuple[tuple[str, int | None], ...]], ...] = (
    (keras.layers.Dense, (("kernel", 0),)),
    (keras.layers.Conv1DTranspose, (("kernel", -1),)),
    (keras.layers.Conv2DTranspose, (("kernel", -1),)),
    (keras.layers.Conv3DTranspose, (("kernel", -1),)),
    (keras.layers.Conv1D, (("kernel", -2),)),
    (keras.layers.Conv2D, (("kernel", -2),)),
    (keras.layers.Conv3D, (("kernel", -2),)),
    (keras.layers.DepthwiseConv1D, (("kernel", None),)),
    (keras.layers.DepthwiseConv2D, (("kernel", None),)),
    (keras.layers.SeparableConv1D, (("depthwise_kernel", None), ("pointwise_kernel", -2))),
    (keras.layers.SeparableConv2D, (("depthwise_kernel", None), ("pointwise_kernel", -2))),
)

SUPPORTED_LAYERS: tuple[str, ...] = tuple(cls.__name__ for cls, _ in _PRUNABLE)



@dataclass(frozen=True)
class Target:
    """One prunable weight: the layer it belongs to, the variable, and its N:M axis."""

    layer: keras.layers.Layer
    attribute: str
    variable: Any
    n_m_axis: int | None

    @property
    def name(self) -> str:
        return f"{self.layer.name}/{self.attribute}"


all_layers = _graph.all_layers


def _weight(layer: keras.layers.Layer, attribute: str) -> Any:
    for name in (attribute, f"_{attribute}"):
        value = getattr(layer, name, None)
        if isinstance(value, keras.Variable):
            return value
    return None


def selection(model: keras.Model, layers: Any, exclude: Any) -> tuple[list, list]:
    """`(include, leave_out)` spec lists, checked (`_graph.layer_specs`)."""
    return (_graph.layer_specs(model, layers, "layers") or [],
            _graph.layer_specs(model, exclude, "exclude") or [])


def prunable_targets(
    model: keras.Model,
    layers: Any = None,
    exclude: Any = None,
    need_n_m_axis: bool = False,
    *,
    prune_depthwise: bool = True,
    min_weights: int = 0,
) -> list[Target]:
    """The weights to prune in `model`, by default every kernel of a supported layer.

    Args:
        model: A built Keras model (nested models are searched too).
        layers: Restrict to layers matching any of these: classes, `fnmatch` name patterns or
            predicates. Defaults to `None` (all supported layers).
        exclude: Leave out layers matching any of these. Defaults to `None`.
        need_n_m_axis: Keep only weights with an input-channel axis (N:M pruning); a layer the
            user named explicitly that has none is an error. Defaults to `False`.
        prune_depthwise: With `layers=None`, include depthwise kernels (DepthwiseConv and the
            depthwise half of SeparableConv). Layers named in `layers=` are always included.
            Defaults to `True`.
        min_weights: With `layers=None`, leave out weights with fewer values than this,
            unless all of them are that small. Defaults to `0`.

    Returns:
        The selected `Target`s, in model order.

    Raises:
        ValueError: If the model is not built, or nothing prunable is selected.
    """
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built yet, so it has no weights to prune. Call it on a "
            "batch or build it with model.build(input_shape) first."
        )
    if isinstance(min_weights, bool) or not isinstance(min_weights, int) or min_weights < 0:
        raise ValueError(f"min_weights must be an integer >= 0, got {min_weights!r}.")
    include, leave_out = selection(model, layers, exclude)
    targets, small = [], []
    for layer in all_layers(model):
        if include and not _graph.matches(layer, include):
            continue
        if leave_out and _graph.matches(layer, leave_out):
            continue
        for cls, weights in _PRUNABLE:
            if isinstance(layer, cls):
                for attribute, axis in weights:
                    variable = _weight(layer, attribute)
                    if variable is None:
                        continue
                    if need_n_m_axis and axis is None:
                        if include:
                            raise ValueError(
                                f"Layer {layer.name!r} ({type(layer).__name__}) has no "
                                f"input-channel axis in its {attribute}, so N:M sparsity does "
                                "not apply to it. Remove it from layers= or use "
                                "granularity='unstructured'."
                            )
                        continue
                    if not include and not prune_depthwise and axis is None:
                        continue
                    target = Target(layer, attribute, variable, axis)
                    if not include and math.prod(variable.shape) < min_weights:
                        small.append(target)
                    else:
                        targets.append(target)
                break
    if not targets:  # every weight is small (a toy model): the size rule has no meaning
        targets = small
    if not targets:
        names = ", ".join(f"{x.name} ({type(x).__name__})" for x in all_layers(model)) or "none"
        raise ValueError(
            f"Nothing to prune in model {model.name!r}: no selected layer is of a supported "
            f"kind. Supported: {', '.join(SUPPORTED_LAYERS)}. Layers in the model: {names}. "
            "Check the layers=/exclude= arguments."
        )
    return targets
