"""Prune a trained model by fine-tuning it with the `Pruning` callback."""

import warnings
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from tfcompress import _legacy, _options, _teacher, _training
from tfcompress.pruning._callback import Pruning
from tfcompress.pruning._masks import parse_granularity
from tfcompress.pruning._report import SparsityReport, sparsity_report
from tfcompress.pruning._shrink import ShrinkReport
from tfcompress.pruning._shrink import shrink as _shrink
from tfcompress.pruning.schedules import PolynomialDecay


@dataclass(frozen=True)
class PruneResult:
    """What `prune` did: accuracy and sparsity before and after, and how it trained (top-1
    accuracy; `None` when the targets are not class labels)."""

    accuracy_before: float | None
    accuracy_after: float | None
    sparsity_before: float
    report: SparsityReport
    granularity: str
    epochs: int
    compile_settings: str
    shrink_report: ShrinkReport | None = None

    @property
    def sparsity_after(self) -> float:
        return self.report.sparsity

    def to_dict(self) -> dict:
        return {
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "sparsity_before": self.sparsity_before,
            "sparsity_after": self.sparsity_after,
            "granularity": self.granularity,
            "epochs": self.epochs,
            "compile_settings": self.compile_settings,
            "layers": self.report.to_dict()["layers"],
            "shrink": None if self.shrink_report is None else self.shrink_report.to_dict(),
        }


RAMP_FRACTION = 0.6  # of the training steps, over which the sparsity rises


def prune(
    model: keras.Model,
    data: Any,
    sparsity: float | None = None,
    granularity: str = _options.PRUNE["granularity"],
    scope: str = _options.PRUNE["scope"],
    epochs: int = _options.PRUNE["epochs"],
    batch_size: int = _options.PRUNE["batch_size"],
    ramp_fraction: float = RAMP_FRACTION,
    layers: Any = None,
    exclude: Any = None,
    verbose: int = 0,
    criterion: Any = _options.PRUNE["criterion"],
    round_to: int = _options.PRUNE["round_to"],
    shrink: bool = _options.PRUNE["shrink"],
    layer_sparsity: "dict[str, float] | None" = None,
    shrink_model: bool | None = None,
    callbacks: list | None = None,
    teacher: keras.Model | None = None,
) -> tuple[keras.Model, PruneResult]:
    """Fine-tunes a copy of `model` while pruning it to `sparsity`; the input is untouched.

    The sparsity rises along the cubic `PolynomialDecay` over the first `ramp_fraction` of the
    training steps, and the rest of the epochs recover accuracy at the final sparsity. The copy
    keeps the model's compile settings; a model saved without them is compiled with Adam and
    sparse categorical cross-entropy (logits detected from the last layer).

    Args:
        model: A trained Keras model.
        data: Training and test data: a `Dataset` or a loader source (`"mnist"`, a path).
        sparsity: Final sparsity. Defaults to `None`: 0.8 for unstructured, `1 - N/M` for N:M,
            0.5 for channel.
        granularity: `"unstructured"`, `"N:M"` or `"channel"`. Defaults to `"unstructured"`.
        scope: `"layer"` or `"global"`. Defaults to `"layer"`.
        epochs: Fine-tuning epochs. Defaults to `3`.
        batch_size: Batch size. Defaults to `64`.
        ramp_fraction: Share of the steps over which sparsity rises. Defaults to `0.6`.
        layers: Layer selection, as for `Pruning`. Defaults to `None`.
        exclude: Layers to leave out, as for `Pruning`. Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        criterion: Channel ranking for `granularity="channel"`, as for `Pruning`. Defaults to
            `"l1"`.
        round_to: Round kept channel counts to a multiple of this, as for `Pruning`.
            Defaults to `1`.
        shrink: After channel pruning, return the physically smaller model made by
            `shrink` (same outputs, compiled like the input). Defaults to `False`.
        layer_sparsity: Final sparsity (or channel ratio) per layer, as for `Pruning`, e.g.
            `tfcompress.debug.sensitivity(model, data).sparsities(0.8)`. Defaults to `None`.
        shrink_model: The former name of `shrink` (deprecated). Defaults to `None`.
        callbacks: Extra Keras callbacks for the fine-tuning; they run after the pruning
            callback, so weights they read are masked. Defaults to `None`.
        teacher: A classifier whose outputs the fine-tuning follows as well as the labels
            (knowledge distillation; e.g. `model` itself, to keep the pruned copy close to it
            on few labels). Its outputs on the training images are computed once; a stream
            trains on its labels alone. Defaults to `None`.

    Returns:
        `(pruned_model, PruneResult)`.

    Raises:
        ValueError: For a bad sparsity, granularity, epoch count or data that does not fit.
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if shrink_model is not None:
        warnings.warn("prune(shrink_model=...) is now prune(shrink=...), as in the recipe "
                      "(shrink:) and the CLI (--shrink).", DeprecationWarning, stacklevel=2)
        shrink = shrink or shrink_model
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    if not 0.0 < ramp_fraction <= 1.0:
        raise ValueError(f"ramp_fraction must be in (0, 1], got {ramp_fraction}.")
    gran = parse_granularity(granularity)
    if shrink and gran.kind != "channel":
        raise ValueError(
            f"shrink needs granularity='channel' (whole channels removed); with "
            f"{granularity!r} the zeros are scattered and nothing can be removed."
        )
    if sparsity is None:
        sparsity = {"n:m": gran.pattern_sparsity, "channel": 0.5}.get(gran.kind, 0.8)
    ds = _training.load_for(model, data)
    if not model.trainable_weights:
        raise ValueError(
            f"The model {model.name!r} has no trainable weights (model.trainable is "
            f"{model.trainable}), so fine-tuning cannot prune it. Set model.trainable = True "
            "(a Distiller's teacher, for one, is frozen).")
    pruned = _training.copy_model(model)
    settings = "the model's saved compile settings"
    if not _training.has_compile_settings(pruned):
        settings = _training.default_compile(pruned)
    before = _training.evaluate(pruned, ds.test)

    steps = epochs * ds.train.num_batches(batch_size)
    start = int(ops.convert_to_numpy(pruned.optimizer.iterations))
    ramp = max(1, int(ramp_fraction * steps))
    schedule = PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=start, end_step=start + ramp,
        frequency=max(1, ramp // 20),
    )
    callback = Pruning(schedule, granularity=granularity, scope=scope, layers=layers,
                       exclude=exclude, criterion=criterion, round_to=round_to,
                       layer_sparsity=layer_sparsity)
    if gran.kind != "channel":
        layers = callback.layers  # with layer_sparsity, the layers it names
    selection = {} if gran.kind == "channel" else {  # the weights the callback prunes
        "prune_depthwise": callback.prune_depthwise, "min_weights": callback.min_weights}
    sparsity_before = sparsity_report(pruned, layers, exclude, **selection).sparsity
    with _teacher.following(teacher, pruned, ds.train) as train:
        _training.fit(pruned, train, epochs=epochs, batch_size=batch_size,
                      verbose=verbose, callbacks=[callback, *(callbacks or [])])
    after = _training.evaluate(pruned, ds.test)
    report = sparsity_report(pruned, layers, exclude, **selection)
    shrink_report = None
    if shrink:
        small, shrink_report = _shrink(pruned, return_report=True)
        _training.compile_like(small, pruned)
        pruned = small
    return pruned, PruneResult(before, after, sparsity_before, report, str(gran), epochs,
                               settings, shrink_report)
