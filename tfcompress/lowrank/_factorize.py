"""`factorize`: replace Dense and Conv2D layers by two thinner layers from a truncated SVD."""

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress import _graph, _legacy, _options
from tfcompress._macs import SizeRatios, layer_macs, model_macs
from tfcompress.lowrank import _svd

CONV_MODES = _options.CONV_MODES
SUPPORTED_LAYERS = ("Dense", "Conv2D")


@dataclass(frozen=True)
class LayerFactorization:
    """What `factorize` did with one candidate layer.

    Attributes:
        name: Layer name.
        kind: `"Dense"` or `"Conv2D"`.
        view: How the kernel was factorized: `"dense"`, `"channel"` or `"spatial"`.
        full_rank: Rank of the kernel's matrix view.
        rank: Chosen rank, or `None` when the layer was left alone.
        energy: Share of the squared singular values kept, or `None`.
        params_before: Parameters of the layer (bias included).
        params_after: Parameters of its replacement (equal to before when left alone).
        macs_before: Multiply-accumulates per image of the layer.
        macs_after: Multiply-accumulates per image of its replacement.
        status: `"factorized"`, or why the layer was left alone.
    """

    name: str
    kind: str
    view: str
    full_rank: int
    rank: int | None
    energy: float | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    status: str

    @property
    def factorized(self) -> bool:
        return self.status == "factorized"


@dataclass(frozen=True)
class FactorizationReport(SizeRatios):
    """Per-layer ranks, parameters and MACs before and after, and the model totals."""

    layers: tuple[LayerFactorization, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    def to_dict(self) -> dict:
        return {**self.size_dict(), "layers": [asdict(layer) for layer in self.layers]}

    def __str__(self) -> str:
        rows = [f"{'layer':<20} {'view':<8} {'rank':>7} {'energy':>6} {'params':>20} "
                f"{'MACs':>26}  status"]
        for r in self.layers:
            rank = f"{r.rank}/{r.full_rank}" if r.rank else f"-/{r.full_rank}"
            energy = f"{r.energy:.3f}" if r.energy is not None else "-"
            rows.append(
                f"{r.name:<20} {r.view:<8} {rank:>7} {energy:>6} "
                f"{r.params_before:>9,} -> {r.params_after:<7,} "
                f"{r.macs_before:>11,} -> {r.macs_after:<11,} {r.status}")
        rows.append(self.size_line())
        return "\n".join(rows)


@dataclass
class _Plan:
    layer: Any
    view: str
    rank: int
    factors: _svd.Factors


def _candidate(layer: Any) -> str | None:
    """`None` when `layer` can be factorized, else the reason it cannot."""
    if type(layer) is keras.layers.Dense:
        return None
    if type(layer) is keras.layers.Conv2D:
        if layer.groups != 1:
            return "grouped convolution"
        if layer.data_format != "channels_last":
            return "channels_first"
        return None
    return "unsupported"


def _view(layer: Any, conv_mode: str) -> str:
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    kh, kw = layer.kernel.shape[:2]
    if conv_mode == "spatial" and kh > 1 and kw > 1:
        return "spatial"
    return "channel"


def _replacement(layer: Any, plan: _Plan) -> tuple[Any, Any]:
    """The two layers that replace `layer`; the second keeps its name, bias and activation."""
    config = layer.get_config()
    policy = layer.dtype_policy
    if plan.view == "dense":
        first = keras.layers.Dense(plan.rank, use_bias=False, name=f"{layer.name}_lowrank",
                                   dtype=policy)
        second = keras.layers.Dense.from_config(config)
        return first, second
    kh, kw = layer.kernel_size
    sy, sx = layer.strides
    dy, dx = layer.dilation_rate
    if plan.view == "channel":
        first = keras.layers.Conv2D(plan.rank, (kh, kw), strides=(sy, sx), padding=layer.padding,
                                    dilation_rate=(dy, dx), use_bias=False,
                                    name=f"{layer.name}_lowrank", dtype=policy)
        config.update(kernel_size=(1, 1), strides=(1, 1), padding="valid", dilation_rate=(1, 1))
    else:
        first = keras.layers.Conv2D(plan.rank, (kh, 1), strides=(sy, 1), padding=layer.padding,
                                    dilation_rate=(dy, 1), use_bias=False,
                                    name=f"{layer.name}_lowrank", dtype=policy)
        config.update(kernel_size=(1, kw), strides=(1, sx), dilation_rate=(1, dx))
    return first, keras.layers.Conv2D.from_config(config)


def factorize(
    model: keras.Model,
    rank_ratio: float | None = None,
    energy: float | None = None,
    layers: Any = None,
    *,
    ranks: dict[str, int] | None = None,
    exclude: Any = None,
    min_params: int = _options.FACTORIZE["min_params"],
    conv_mode: str = _options.FACTORIZE["conv_mode"],
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, FactorizationReport]:
    """Returns a copy of `model` with Dense and Conv2D layers split in two by a truncated SVD.

    A Dense layer becomes Dense(r, no bias) -> Dense(units); a Conv2D becomes a k x k conv with
    r filters -> a 1 x 1 conv (`conv_mode="channel"`), or a k x 1 conv -> a 1 x k conv
    (`"spatial"`). The new kernels are the best rank-r approximation of the old one, so before
    any fine-tuning the model is already close to the original (identical at full rank). The
    second layer keeps the original's name, bias and activation. Layers below `min_params`,
    and layers whose chosen rank would not save parameters, are left alone and reported.
    Fine-tune the result for an epoch or so; it saves as a plain `.keras` and exports to int8.

    Args:
        model: A functional or Sequential model (nested models are inlined). Not modified.
        rank_ratio: Keep this fraction of each layer's full rank. Defaults to `None`.
        energy: Keep the smallest rank whose singular values hold this fraction of the
            squared total (e.g. `0.9`). Defaults to `None`.
        layers: Only consider layers matching any of these: classes, `fnmatch` name patterns or
            predicates. Defaults to `None` (every Dense and Conv2D).
        ranks: Per-layer ranks, `{layer_name: rank}`; they override `rank_ratio`/`energy` for
            those layers and are applied even below `min_params` or above the break-even rank.
            Defaults to `None`.
        exclude: Leave out layers matching any of these. Defaults to `None`.
        min_params: Leave layers with fewer parameters than this alone. Defaults to `4096`.
        conv_mode: `"channel"` or `"spatial"` (see above; 1 x k kernels always use
            `"channel"`). Defaults to `"channel"`.
        return_report: Also return a `FactorizationReport`. Defaults to `False`.

    Returns:
        The new, uncompiled model; with `return_report`, `(model, report)`.

    Raises:
        TypeError: If `model` is subclassed.
        ValueError: If neither or both of `rank_ratio` and `energy` are given (unless `ranks`
            alone picks the layers), a value is out of range, or `ranks` names a layer that
            cannot be factorized.

    Examples:
        >>> import keras
        >>> from tfcompress.lowrank import factorize
        >>> model = keras.Sequential([keras.Input((256,)),
        ...                           keras.layers.Dense(256, "relu", name="hidden"),
        ...                           keras.layers.Dense(10, name="logits")])
        >>> small, report = factorize(model, rank_ratio=0.25, return_report=True)
        >>> [layer.name for layer in small.layers[1:]], report.layers[0].rank
        (['hidden_lowrank', 'hidden', 'logits'], 64)
        >>> round(report.param_ratio, 2)
        0.52
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if rank_ratio is not None and energy is not None:
        raise ValueError("Give rank_ratio or energy, not both.")
    if rank_ratio is None and energy is None and not ranks:
        raise ValueError(
            "Say how to choose ranks: rank_ratio=0.25 (a fraction of each layer's full rank), "
            "energy=0.9 (the share of singular-value energy to keep), or ranks={name: r}."
        )
    if conv_mode not in CONV_MODES:
        raise ValueError(f"conv_mode must be one of {CONV_MODES}, got {conv_mode!r}.")
    if not isinstance(min_params, int) or min_params < 0:
        raise ValueError(f"min_params must be an integer >= 0, got {min_params!r}.")
    _graph.require_functional(model, "factorize")
    ranks = dict(ranks or {})
    include = _graph.layer_specs(model, layers, "layers")
    leave_out = _graph.layer_specs(model, exclude, "exclude")
    all_layers = _graph.all_layers(model)
    known = {layer.name: layer for layer in all_layers}
    for name in ranks:
        if name not in known:
            raise ValueError(f"ranks names {name!r}, which is not a layer of {model.name!r}.")
        reason = _candidate(known[name])
        if reason is not None:
            raise ValueError(
                f"ranks names {name!r} ({type(known[name]).__name__}), which cannot be "
                f"factorized ({reason}). Supported: {', '.join(SUPPORTED_LAYERS)}."
            )

    plans: dict[int, _Plan] = {}
    skipped: dict[str, str] = {}
    order: list[Any] = []
    for layer in all_layers:
        if _candidate(layer) is not None:
            continue
        explicit = layer.name in ranks
        if not explicit:
            if rank_ratio is None and energy is None:
                continue
            if include and not _graph.matches(layer, include):
                continue
            if leave_out and _graph.matches(layer, leave_out):
                continue
        order.append(layer)
        kernel = ops.convert_to_numpy(layer.kernel)
        view = _view(layer, conv_mode)
        if not explicit and kernel.size < min_params:
            skipped[layer.name] = f"left alone: {kernel.size:,} weights < min_params"
            continue
        rank = _svd.choose_rank(_svd.singular_values(kernel, view),
                                rank_ratio=None if explicit else rank_ratio,
                                energy=None if explicit else energy,
                                rank=ranks.get(layer.name))
        limit = _svd.break_even_rank(kernel.shape, view)
        if rank > limit and not explicit:
            skipped[layer.name] = f"left alone: rank {rank} saves nothing (break-even {limit})"
            continue
        plans[id(layer)] = _Plan(layer, view, rank, _svd.split(kernel, view, rank))

    built: dict[int, tuple[Any, Any]] = {}

    def visit(node: Any, args: tuple, kwargs: dict) -> Any:
        plan = plans.get(id(node.operation))
        if plan is None:
            return None
        if id(plan.layer) not in built:
            built[id(plan.layer)] = _replacement(plan.layer, plan)
        first, second = built[id(plan.layer)]
        out = second(first(args[0]))
        first.set_weights([plan.factors.first])
        weights = plan.layer.get_weights()
        second.set_weights([plan.factors.second, *weights[1:]])
        return out

    new = _graph.rebuild(model, visit, name=f"{model.name}_factorized")
    if not return_report:
        return new
    rows = []
    for layer in order:
        kernel_shape = tuple(layer.kernel.shape)
        view = _view(layer, conv_mode)
        full = min(_svd.as_matrix(np.empty(kernel_shape, np.float32), view).shape)
        before = layer.count_params()
        macs = layer_macs(layer)
        plan = plans.get(id(layer))
        if plan is None:
            rows.append(LayerFactorization(layer.name, type(layer).__name__, view, full, None,
                                           None, before, before, macs, macs,
                                           skipped[layer.name]))
            continue
        first, second = built[id(layer)]
        rows.append(LayerFactorization(
            layer.name, type(layer).__name__, view, full, plan.rank,
            round(plan.factors.energy, 4), before, first.count_params() + second.count_params(),
            macs, layer_macs(first) + layer_macs(second), "factorized"))
    report = FactorizationReport(tuple(rows), model.count_params(), new.count_params(),
                                 model_macs(model), model_macs(new))
    return new, report
