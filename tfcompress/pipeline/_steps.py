"""What each recipe step does to a model: thin wrappers over the library's public functions."""

from dataclasses import dataclass, field
from typing import Any

import keras
from keras import ops

from tfcompress import _teacher, _training
from tfcompress.data import Dataset
from tfcompress.pipeline._recipe import Step

# Fine-tuning keeps the weights of its best epoch on the validation data and stops after
# PATIENCE epochs without a better one; COSINE_LR lowers the learning rate along a half
# cosine over its epochs (both measured on models/suite; see its results).
RESTORE_BEST = True
PATIENCE = 3
COSINE_LR = False
# TEACHER: the run's input model as teacher (soft targets beside the labels) in the
# fine-tuning of the prune, factorize and qat steps (measured on models/suite).
TEACHER = False


def _best(ds: Dataset, metric: Any, first_epoch: int, epochs: int | None = None) -> list:
    """The callbacks of a fine-tuning of `epochs`: one that keeps its best epoch on the
    validation data (`ds.test` inside the pipeline) and one that lowers the learning rate,
    as turned on."""
    callbacks: list = []
    if RESTORE_BEST:
        callbacks.append(_training.BestOnValidation(ds.test, metric, first_epoch, PATIENCE))
    if COSINE_LR and epochs:
        callbacks.append(_training.CosineEpochs(epochs))
    return callbacks


def _fine_tuning(callbacks: list) -> dict:
    best = [c for c in callbacks if isinstance(c, _training.BestOnValidation)]
    return {"fine_tuning": best[0].to_dict()} if best else {}


@dataclass
class Outcome:
    """A step's new model, what it reports, or why it was skipped (model unchanged)."""

    model: keras.Model
    info: dict = field(default_factory=dict)
    skipped: str | None = None


def run(step: Step, model: keras.Model, ds: Dataset, batch_size: int, verbose: int,
        safe_mode: bool = True, metric: Any = None, teacher: keras.Model | None = None
        ) -> Outcome:
    """Runs one step (not export) on `model` with training data `ds.train` and evaluation
    data `ds.test` (the validation split inside the pipeline); `safe_mode` is Keras' safe
    mode for a student loaded from a file; `metric` scores the sensitivity scans; `teacher`
    (the run's input model) guides the fine-tuning when `TEACHER` is on."""
    teacher = teacher if TEACHER else None
    if step.kind == "factorize":
        return _factorize(step, model, ds, batch_size, verbose, metric, teacher)
    if step.kind == "distill":
        return _distill(step, model, ds, batch_size, verbose, safe_mode)
    if step.kind == "prune":
        return _prune(step, model, ds, batch_size, verbose, metric, teacher)
    if step.kind == "qat":
        from tfcompress.quantization import train_quantized

        float_layers, info = step.get("float_layers"), {}
        if float_layers == "auto":  # a quantize scan on the validation data picks them
            scan = _scan(model, ds, "quantize", metric=metric)
            float_layers = scan.float_layers()
            info["sensitivity"] = scan.to_dict()
        best = _best(ds, metric, 1, step.get("epochs"))
        q, result = train_quantized(model, ds, epochs=step.get("epochs"), batch_size=batch_size,
                                    learning_rate=step.get("learning_rate"), verbose=verbose,
                                    float_layers=float_layers or None, callbacks=best,
                                    teacher=teacher)
        return Outcome(q, {**result.to_dict(), "float_layers": list(float_layers or []), **info,
                           **_fine_tuning(best)})
    raise ValueError(f"Step {step.kind!r} is not a training step.")


def _scan(model: keras.Model, ds: Dataset, technique: str, amount: float | None = None,
          metric: Any = None):
    """A sensitivity scan of `model` on the evaluation (validation) data, by `metric`."""
    from tfcompress.debug import sensitivity

    return sensitivity(model, ds, technique, amount, metric=metric)


def _factorize(step: Step, model: keras.Model, ds: Dataset, batch_size: int,
               verbose: int, metric: Any = None, teacher: keras.Model | None = None
               ) -> Outcome:
    from tfcompress.lowrank import factorize

    rank_ratio, energy = step.get("rank_ratio"), step.get("energy")
    if rank_ratio is None and energy is None:
        energy = 0.9
    new, report = factorize(model, rank_ratio=rank_ratio, energy=energy,
                            conv_mode=step.get("conv_mode"), min_params=step.get("min_params"),
                            return_report=True)
    if not any(layer.factorized for layer in report.layers):
        return Outcome(model, report.to_dict(),
                       skipped="no layer gets smaller at this rank (see the report)")
    _training.compile_like(new, model, step.get("learning_rate"))
    best = _best(ds, metric, 0, step.get("epochs")) if step.get("epochs") else []
    if step.get("epochs"):
        with _teacher.following(teacher, new, ds.train) as train:
            _training.fit(new, train, epochs=step.get("epochs"),
                          batch_size=batch_size, verbose=verbose, callbacks=best)
    return Outcome(new, {**report.to_dict(), **_fine_tuning(best)})


def _distill(step: Step, model: keras.Model, ds: Dataset, batch_size: int,
             verbose: int, safe_mode: bool) -> Outcome:
    from tfcompress import _loading
    from tfcompress.distillation import distill, make_student

    if step.get("student"):
        student = _loading.load_keras_model(step.get("student"), safe_mode=safe_mode)
    else:
        try:
            student = make_student(model, float(step.get("channels")),
                                   fold_pooling=bool(step.get("fold_pooling")),
                                   round_to=int(step.get("round_to")),
                                   input_downscale=int(step.get("input_downscale")))
        except ValueError as e:
            raise ValueError(f"distill step: {e} In a recipe: distill: {{student: "
                             "student.keras}.") from None
    trained, result = distill(model, student, ds, epochs=step.get("epochs"),
                              batch_size=batch_size, learning_rate=step.get("learning_rate"),
                              temperature=step.get("temperature"), alpha=step.get("alpha"),
                              verbose=verbose)
    return Outcome(trained, result.to_dict())


def _prune(step: Step, model: keras.Model, ds: Dataset, batch_size: int,
           verbose: int, metric: Any = None, teacher: keras.Model | None = None) -> Outcome:
    from tfcompress.pruning import prune

    granularity = step.get("granularity")
    extra = step.get("finetune_epochs")  # the recipe has checked it goes with channel + shrink
    layer_sparsity, info = None, {}
    if step.get("per_layer"):
        target = step.get("sparsity") or (0.5 if granularity == "channel" else 0.8)
        scan = _scan(model, ds, "channels" if granularity == "channel" else "prune",
                     target if granularity == "channel" else None, metric)
        # Channels are removed for speed: equal overall share of MACs; weights for size.
        layer_sparsity = scan.sparsities(target, by="macs" if granularity == "channel"
                                         else "weights")
        info = {"sensitivity": scan.to_dict(), "layer_sparsity": layer_sparsity}
    import math

    from tfcompress.pruning._finetune import RAMP_FRACTION

    # Weights can be put back only from epochs wholly at the final sparsity (after the
    # ramp's last mask update), so that they carry the final masks.
    epochs = step.get("epochs")
    best = _best(ds, metric, min(epochs, math.floor(RAMP_FRACTION * epochs) + 1), epochs)
    pruned, result = prune(model, ds, sparsity=step.get("sparsity"), granularity=granularity,
                           layer_sparsity=layer_sparsity,
                           scope=step.get("scope"), epochs=step.get("epochs"),
                           batch_size=batch_size, criterion=step.get("criterion"),
                           round_to=step.get("round_to"),
                           shrink=granularity == "channel" and step.get("shrink"),
                           verbose=verbose, callbacks=best, teacher=teacher)
    result_info = {**result.to_dict(), **info, **_fine_tuning(best)}
    target = step.get("sparsity")
    if granularity != "channel" and target is not None and result.sparsity_after < target - 0.02:
        raise ValueError(
            f"prune step: the model reached a sparsity of {result.sparsity_after:.3f}, not the "
            f"{target:g} asked for. Check that its layers are trainable and prunable "
            "(tfcompress.pruning.sparsity_report lists them).")
    if extra:
        lr = getattr(pruned.optimizer, "learning_rate", None)
        if lr is not None:
            pruned.optimizer.learning_rate = float(ops.convert_to_numpy(lr)) / 10
        after = _best(ds, metric, 0, extra)
        with _teacher.following(teacher, pruned, ds.train) as train:
            _training.fit(pruned, train, epochs=extra, batch_size=batch_size,
                          verbose=verbose, callbacks=after)
        if tuning := _fine_tuning(after):
            result_info["fine_tuning_after_shrink"] = tuning["fine_tuning"]
    return Outcome(pruned, result_info)
