"""Fine-tuning helpers shared by the transforms: copying a model with its compile settings."""

import os
import tempfile
from typing import Any

import keras


def has_compile_settings(model: keras.Model) -> bool:
    """True when `model` was compiled with an optimizer and a loss."""
    return bool(getattr(model, "compiled", False)) and getattr(model, "loss", None) is not None


def outputs_logits(model: keras.Model) -> bool:
    """False when the last layer ends in a softmax (probabilities), True otherwise."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    act = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Softmax):
        return False
    return getattr(act, "__name__", "") != "softmax"


def default_loss(model: keras.Model) -> tuple[Any, list | None, str]:
    """`(loss, metrics, words)` for a model compiled without settings of its own: the
    detection loss on its anchors for a detector, else sparse categorical cross-entropy
    (logits detected from the last layer) with accuracy."""
    if is_detector(model):
        from tfcompress.detection import DetectionLoss, anchors_of, matching_of

        return (DetectionLoss(anchors_of(model), matching=matching_of(model)), None,
                "detection loss on its anchors")
    logits = outputs_logits(model)
    return (keras.losses.SparseCategoricalCrossentropy(from_logits=logits), ["accuracy"],
            f"sparse categorical cross-entropy (from_logits={logits})")


def default_compile(model: keras.Model, learning_rate: float = 1e-3) -> str:
    """Compiles `model` for classification (a detector: for detection) with clear
    defaults; returns what it chose."""
    loss, metrics, words = default_loss(model)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    return f"Adam(learning_rate={learning_rate:g}), {words}" + (", accuracy" if metrics else "")


def copy_model(model: keras.Model) -> keras.Model:
    """A deep copy of `model` with its weights and compile settings (optimizer state too).

    Goes through a `.keras` round trip, which is the one copy that keeps every compile setting.
    The file is our own, written from a model already in this process (whose Lambda code, if
    any, the caller chose to run), so it is read back without Keras' safe mode.
    """
    import warnings

    with tempfile.TemporaryDirectory(prefix="tfcompress-copy-") as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        with warnings.catch_warnings():  # the saved optimizer was never built: nothing to restore
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.saving.load_model(path, compile=has_compile_settings(model),
                                           safe_mode=False)


def evaluate(model: keras.Model, data, metric=None, batch_size: int = 256) -> float | None:
    """`metric` of `model` on `data` (a `Part`, or anything `as_part` takes), read batch by
    batch; a multi-output model is scored on its first output. Without a metric: top-1, or
    `None` when the targets are not class labels (an autoencoder's images)."""
    import numpy as np

    from tfcompress.data import as_part
    from tfcompress.metrics import as_metric

    part = as_part(data)
    if metric is None and is_detector(model):
        metric = "map50"
    if metric is None and part.label_max() is None:
        return None
    metric = as_metric(metric).for_model(model)

    def pairs():
        size = None
        for x, y in part.batches(batch_size):
            if y is None:
                raise ValueError(f"{part.name} has no targets (labels) to score against.")
            size = size or len(x)
            n = len(x)
            if n < size:  # a short last batch is padded: one shape, one trace of predict
                x = np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)])
            pred = model.predict(x, batch_size=size, verbose=0)  # also under tf.distribute
            yield y, (pred[0] if isinstance(pred, (list, tuple)) else pred)[:n]

    return metric.score(pairs())


def is_detector(model: keras.Model) -> bool:
    """True for a model that carries anchors (a `tfcompress.detection.Anchors` layer)."""
    from tfcompress.detection import anchors_of

    return anchors_of(model) is not None


def check_metric_fits(model: keras.Model, data, metric) -> None:
    """Raises in one line, before any work, when `metric` cannot score `model`'s (first)
    output against the targets of `data` (a `Part`)."""
    import numpy as np

    from tfcompress.metrics import as_metric

    x, y = data.head(8)
    if y is None:
        return
    pred = model.predict(np.asarray(x, np.float32), verbose=0)
    pred = pred[0] if isinstance(pred, (list, tuple)) else pred
    metric = as_metric(metric)
    metric.check_fits(y, pred)  # shapes first: a classifier given map50 gets that line
    if metric.detection is not None:  # then its score, decoded against the model's anchors
        metric.for_model(model).check_fits(y, pred)


def accuracy(model: keras.Model, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` on `(x, y)` arrays."""
    return evaluate(model, (x, y), "top1", batch_size)


def check_data_fits(model: keras.Model, ds) -> None:
    """Raises when the data's image shape is not the one `model` takes, or its labels go
    beyond the model's outputs."""
    expected = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if expected is not None and not _fits(expected, ds.input_shape):
        raise ValueError(
            f"The model expects images of shape {expected}, but the data has {ds.input_shape}. "
            + ("The stream yields single samples: batch it, e.g. dataset.batch(64)."
               if tuple(expected[1:]) == tuple(ds.input_shape) else
               "Pass the data the model was trained on.")
        )
    outputs = getattr(model, "outputs", None)
    classes = outputs[0].shape[-1] if outputs else None
    if isinstance(classes, int):
        check_labels(ds, classes, f"the model {model.name!r}")
        from tfcompress.data import check_classes

        check_classes(ds, classes, f"the model {model.name!r}")


def _fits(expected: tuple, shape: tuple) -> bool:
    return len(expected) == len(shape) and all(
        e is None or e == s for e, s in zip(expected, shape, strict=True))


def check_labels(ds, classes: int, what: str) -> None:
    """Raises when a label of `ds` is not below `classes` (the outputs of `what`); targets
    that are not class labels (e.g. images) are not checked."""
    tops = [p.label_max() for p in (ds.train, ds.test)]
    top = max((t for t in tops if t is not None), default=-1)
    if top >= classes:
        raise ValueError(
            f"The data {ds.name!r} has labels up to {top}, but {what} has {classes} outputs "
            f"(classes 0..{classes - 1}). Pass the data the model was trained on, or labels "
            "numbered from 0."
        )


def load_for(model: keras.Model, data, **kwargs):
    """Loads `data` as `model` takes it (image folders read at its input size and channel
    count, images in the range its first `Rescaling`/`Normalization` layer expects unless
    `preprocessing=` says otherwise), and checks that it fits the model."""
    from tfcompress.data import Preprocessing, load
    from tfcompress.data._preprocess import as_preprocessing

    expected = Preprocessing.from_model(model)
    asked = as_preprocessing(kwargs.get("preprocessing"))
    if asked is None:
        kwargs["preprocessing"] = expected
    elif expected is not None and asked.input_range != expected.input_range:
        import warnings

        warnings.warn(
            f"The images are scaled to {asked.input_range} as asked (--input-range), but the "
            f"model expects {expected.input_range} ({expected.source}): every figure will be "
            f"for images in the wrong range. Leave --input-range out to follow the model.",
            stacklevel=2)

    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()
    if len(shape) == 3 and all(isinstance(d, int) for d in shape):
        kwargs.setdefault("image_size", shape[:2])
        kwargs.setdefault("channels", shape[2])
    ds = load(data, **kwargs)
    check_data_fits(model, ds)
    return ds


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training with one clear error as soon as the loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        import math

        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise ValueError(
                f"Training stopped: the loss became {float(loss)} at batch {batch}. Nothing was "
                "written. Lower the learning rate, or check the data and the model's weights "
                "for NaN/inf."
            )


class BestOnValidation(keras.callbacks.Callback):
    """Scores the model on validation data after every epoch from `first_epoch` (1-based;
    0 also counts the weights training started from), puts back the weights of the best
    epoch when training ends, and stops after `patience` epochs without a better score.

    For fine-tuning on few images: the last epoch is often not the best one. Weights only
    (the optimizer's state is not restored); the model's structure must not change during
    training (for pruning, count from the epoch its sparsity stops rising)."""

    def __init__(self, data, metric=None, first_epoch: int = 1, patience: int | None = 3):
        super().__init__()
        from tfcompress.metrics import as_metric

        self.data, self.metric = data, as_metric(metric)
        self.first_epoch, self.patience = first_epoch, patience
        self.best = self.best_epoch = self._weights = None
        self.scores: list[tuple[int, float]] = []

    def _consider(self, epoch: int) -> None:
        score = evaluate(self.model, self.data, self.metric)
        self.scores.append((epoch, score))
        if self.best is None or self.metric.worse_by(self.best, score) > 0:
            self.best, self.best_epoch = score, epoch
            self._weights = self.model.get_weights()
        elif self.patience is not None and epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self.best = self.best_epoch = self._weights = None
        self.scores = []
        if self.first_epoch == 0:
            self._consider(0)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= max(self.first_epoch, 1):
            self._consider(epoch + 1)

    def on_train_end(self, logs=None):
        if self._weights is not None:
            from tfcompress import _graph

            _graph.set_weights(self.model, self._weights)

    def to_dict(self) -> dict:
        return {"best_epoch": self.best_epoch, "epochs_scored": len(self.scores),
                "validation_scores": [round(float(s), 6) for _, s in self.scores]}


class CosineEpochs(keras.callbacks.Callback):
    """Lowers the optimizer's learning rate along a half cosine, epoch by epoch, from its
    value when training starts to `floor` times it at the last of `epochs`; puts the value
    back when training ends. Does nothing for an optimizer with a schedule of its own."""

    def __init__(self, epochs: int, floor: float = 0.05):
        super().__init__()
        self.epochs, self.floor = max(1, int(epochs)), floor
        self.base = None

    def on_train_begin(self, logs=None):
        lr = getattr(self.model.optimizer, "learning_rate", None)
        self.base = None
        if isinstance(lr, keras.Variable):
            self.base = float(keras.ops.convert_to_numpy(lr))

    def on_epoch_begin(self, epoch, logs=None):
        if self.base is None:
            return
        import math

        t = min(epoch, self.epochs - 1) / max(self.epochs - 1, 1)
        scale = self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))
        self.model.optimizer.learning_rate.assign(self.base * scale)

    def on_train_end(self, logs=None):
        if self.base is not None:
            self.model.optimizer.learning_rate.assign(self.base)


def fit(model: keras.Model, data, *, batch_size: int = 64, callbacks=None, **kwargs):
    """`model.fit` on `data` (a `Part`: arrays, a folder's files or a stream, read batch by
    batch) that stops on a non-finite loss and refuses a model whose weights end up
    non-finite."""
    import numpy as np

    from tfcompress.data import as_part

    part = as_part(data, "train")
    args = part.fit_args(batch_size, seed=int(np.random.randint(2**31)))
    try:
        history = model.fit(**args, callbacks=[*(callbacks or []), StopOnNonFinite()],
                            **kwargs)
    except Exception as e:  # noqa: BLE001 (a data error raised inside TensorFlow's input pipeline)
        line = _stream_error(e)
        if line is None:
            raise
        raise ValueError(line) from None
    check_finite_weights(model, "after training")
    return history


def _stream_error(error: Exception) -> str | None:
    """The one line of a `ValueError` that a streamed batch raised inside TensorFlow's input
    pipeline (which wraps it in a multi-line runtime error), or `None` for any other error."""
    import re

    if isinstance(error, ValueError) or "Error" not in type(error).__name__:
        return None
    found = re.search(r"ValueError: (.+)", str(error))
    return found.group(1).strip() if found else None


def check_finite_weights(model: keras.Model, when: str = "") -> None:
    """Raises naming the first weight (layer/variable path) that holds NaN or inf."""
    import numpy as np

    for w in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(w))
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            layer = w.path.rsplit("/", 1)[0]
            raise ValueError(
                f"The model's layer {layer!r} has {bad:,} non-finite weights (NaN or inf) in "
                f"{w.path!r}{' ' + when if when else ''}. Nothing was written. Retrain it from "
                "finite weights, with a lower learning rate.")


def compile_like(model: keras.Model, original: keras.Model, learning_rate: float | None = None
                 ) -> str:
    """Compiles `model` with the loss and metrics `original` was compiled with (a fresh
    optimizer of the same kind), or with the defaults; returns a description of the choice."""
    config = original.get_compile_config() if has_compile_settings(original) else None
    if not config:
        return default_compile(model, learning_rate or 1e-3)
    config = keras.saving.deserialize_keras_object(config)
    if learning_rate is not None:
        config["optimizer"].learning_rate = learning_rate
    model.compile(**config)
    return "the model's saved compile settings"
