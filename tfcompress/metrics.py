"""What a model is scored by: top-1 (the default) or top-5 accuracy for classifiers, any Keras
metric, or a function of `(y_true, y_pred)`, each with a direction (higher or lower is
better). The pipeline's budget, its searches, `bench` and the fine-tuning reports all read
one `Metric`.

Examples:
    >>> import numpy as np
    >>> m = Metric("top5")
    >>> m.name, m.direction, m.percent
    ('top5', 'max', True)
    >>> y, logits = np.array([0, 1]), np.eye(6)[[0, 3]]
    >>> m.score([(y, logits)]), Metric("top1").score([(y, logits)])
    (1.0, 0.5)
    >>> err = Metric("mse")
    >>> err.direction, err.worse_by(0.12, 0.10)
    ('min', 0.01999999999999999)
"""

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tfcompress.data._parts import class_ids

DIRECTIONS = ("max", "min")
# Keras metric classes whose bigger value is better, and those whose smaller value is.
_HIGHER = re.compile(r"Accuracy|AUC|Precision|Recall|IoU|F1Score|FBetaScore|R2Score|"
                     r"CosineSimilarity|TruePositives|TrueNegatives|Sensitivity|Specificity")
# Detection metrics (COCO, by pycocotools): mAP at IoU 0.5, and averaged over IoU 0.5:0.95.
DETECTION: dict[str, str] = {"map50": "mAP@0.5", "map": "mAP@0.5:0.95"}
_LOWER = re.compile(r"Error|Crossentropy|Hinge|Divergence|Poisson|LogCosh|FalsePositives|"
                    r"FalseNegatives|Loss")


class Metric:
    """A score of a model's outputs against the targets, with the direction that is better.

    Args:
        spec: `"top1"` (also `"accuracy"`), `"topK"` for any K (e.g. `"top5"`), `"map50"` or
            `"map"` for a detector (COCO mAP@0.5 and mAP@0.5:0.95, by pycocotools, on the
            detections decoded against its anchors: see `for_model`), a Keras metric
            name (`"mse"`, `"mae"`, `"auc"`...) or instance (`keras.metrics.MeanSquaredError()`,
            cloned for every score), a function `(y_true, y_pred) -> float` on one batch
            (averaged over samples), or a `Metric`. Defaults to `"top1"`.
        direction: `"max"` (higher is better) or `"min"`. Defaults to `None`: known for top-K
            and for Keras' accuracy, AUC, precision/recall, IoU and error/cross-entropy
            metrics; a function or another Keras metric must say.
        name: How reports call it. Defaults to the metric's own name.

    Raises:
        ValueError: For an unknown name, a bad direction, or a function without a direction.
    """

    def __init__(self, spec: Any = "top1", *, direction: str | None = None,
                 name: str | None = None):
        if isinstance(spec, Metric):
            direction = direction or spec.direction
            name = name or spec.name
            spec = spec.spec
        self.spec = spec
        self.top_k: int | None = None
        self._keras: Any = None
        self._fn: Callable | None = None
        self.detection: str | None = None
        self.anchors: Any = None
        self.postprocess: Any = None
        inferred, percent = None, False
        if isinstance(spec, str) and spec.lower() in DETECTION:
            self.detection = spec.lower()
            name, inferred, percent = name or self.detection, "max", True
        elif isinstance(spec, str) and re.fullmatch(r"accuracy|top\d+", spec.lower()):
            self.top_k = 1 if spec.lower() == "accuracy" else int(spec[3:])
            if self.top_k < 1:
                raise ValueError(f"metric {spec!r}: K must be >= 1.")
            name, inferred, percent = name or f"top{self.top_k}", "max", True
        elif isinstance(spec, str) or _is_keras_metric(spec):
            import keras

            try:
                self._keras = keras.metrics.get(spec) if isinstance(spec, str) else spec
            except ValueError:
                raise ValueError(
                    f"Unknown metric {spec!r}: expected top1, top5 (topK), a Keras metric "
                    "name such as mse, mae or auc, or (in Python) a Keras metric or a "
                    "function (y_true, y_pred) -> float with a direction.") from None
            if not _is_keras_metric(self._keras):  # a metric function: averaged per sample
                self._fn, self._keras = self._keras, None
                cls = getattr(self._fn, "__name__", "").title().replace("_", "")
            else:
                cls = type(self._keras).__name__
            name = name or (self._keras.name if self._keras is not None else
                            self._fn.__name__)
            inferred = "max" if _HIGHER.search(cls) else "min" if _LOWER.search(cls) else None
            percent = "Accuracy" in cls
        elif callable(spec):
            self._fn = spec
            name = name or getattr(spec, "__name__", "metric")
        else:
            raise ValueError(f"metric must be a name, a Keras metric or a function; got "
                             f"{type(spec).__name__}.")
        if direction is not None and inferred is not None and direction != inferred:
            raise ValueError(
                f"metric {name!r} is better when {'higher' if inferred == 'max' else 'lower'} "
                f"(direction {inferred!r}), so direction {direction!r} would rank the worst "
                "models first. Leave the direction out for this metric (on the command line, "
                "drop --metric-direction).")
        direction = direction or inferred
        if direction not in DIRECTIONS:
            raise ValueError(
                f"metric {name!r} needs a direction: 'max' if higher is better, 'min' if "
                f"lower is (got {direction!r}). Python: Metric(fn, direction='min'); command "
                "line: --metric-direction min.")
        self.name, self.direction, self.percent = str(name), direction, percent

    def for_model(self, model: Any, anchors: Any = None, postprocess: Any = None) -> "Metric":
        """This metric ready to score `model`'s outputs: for `map50`/`map`, a copy that
        decodes them against the detector's anchors (its `Anchors` layer, or `anchors`) with
        `postprocess` (a `tfcompress.detection.Postprocess`; defaults to its defaults); any
        other metric is returned as it is.

        Raises:
            ValueError: For a detection metric and a model that is not a detector.
        """
        if self.detection is None:
            return self
        from tfcompress.detection import check_detector

        return self.with_anchors(check_detector(
            model, anchors if anchors is not None else self.anchors,
            f"The model scored by {self.name}"), postprocess)

    def with_anchors(self, anchors: Any, postprocess: Any = None) -> "Metric":
        """A copy of this detection metric that decodes outputs against `anchors` (`(A, 4)`)
        with `postprocess` (defaults to `tfcompress.detection.Postprocess()`)."""
        import copy

        from tfcompress.detection import Postprocess

        bound = copy.copy(self)
        bound.anchors = np.asarray(anchors, np.float32)
        bound.postprocess = postprocess or self.postprocess or Postprocess()
        return bound

    @property
    def classifies(self) -> bool:
        """True for top-K: the targets are class labels."""
        return self.top_k is not None

    @property
    def unit(self) -> str:
        """The unit of a difference: points for a percentage, else the metric's own."""
        return "points" if self.percent else ""

    def score(self, pairs: Iterable[tuple[Any, Any]]) -> float:
        """The metric over `(y_true, y_pred)` batches."""
        if self.detection is not None:
            if self.anchors is None:
                raise ValueError(f"metric {self.name!r} decodes a detector's outputs against "
                                 "its anchors: score it through Metric.for_model(model).")
            from tfcompress.detection._map import score_batches

            return score_batches(pairs, self.anchors, self.postprocess)[self.detection]
        if self.top_k is not None:
            right = total = 0
            for y, pred in pairs:
                y, pred = class_ids(y), np.asarray(pred)
                pred = pred.reshape(len(pred), -1)
                if self.top_k == 1:
                    hit = pred.argmax(axis=1) == y
                else:
                    k = min(self.top_k, pred.shape[1])
                    top = np.argpartition(-pred, k - 1, axis=1)[:, :k]
                    hit = (top == y[:, None]).any(axis=1)
                right += int(hit.sum())
                total += len(y)
            return right / max(total, 1)
        if self._keras is not None:
            metric = type(self._keras).from_config(self._keras.get_config())
            for y, pred in pairs:
                metric.update_state(y, pred)
            return float(np.asarray(metric.result()))
        weighted = total = 0.0
        for y, pred in pairs:
            value = np.asarray(self._fn(y, pred), dtype=np.float64)
            weighted += float(value.mean()) * len(pred)
            total += len(pred)
        return weighted / max(total, 1)

    def check_fits(self, y: Any, pred: Any) -> None:
        """Raises in one line when this metric cannot compare targets like `y` with outputs
        like `pred` (a regression metric on class labels, labels for a top-K metric that
        are not class ids...), so that a run fails before its first expensive step."""
        y, pred = np.asarray(y), np.asarray(pred)
        problem = None
        if self.detection is not None:
            if y.ndim != 3 or y.shape[-1] != 5:
                problem = "its targets are not boxes (rows [class, ymin, xmin, ymax, xmax])"
            elif pred.ndim != 3 or pred.shape[-1] < 5:
                problem = "the model is not a detector (outputs (batch, anchors, 4 + classes))"
            if problem:
                raise ValueError(
                    f"The metric {self.name!r} scores a detector's boxes, but {problem}: "
                    f"targets {y.shape[1:]} and outputs {pred.shape[1:]} per sample. Use "
                    "top1 for a classifier, map50 or map for a detector with box targets.")
            if self.anchors is None:  # shapes only until bound to a detector (for_model)
                return
        if self.top_k is not None and (y.ndim > 1 and y.shape[1:] != pred.shape[1:]
                                       or y.dtype.kind == "f" and not np.all(y == np.round(y))):
            problem = "its targets are not class labels"
        if problem is None:
            try:
                value = self.score([(y, pred)])
                problem = None if np.isfinite(value) else f"it scored {value}"
            except Exception as e:  # noqa: BLE001 (whatever the metric raises on these shapes)
                line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                problem = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", line).rstrip(". ")
        if problem:
            raise ValueError(
                f"The metric {self.name!r} cannot compare the data's targets (shape "
                f"{y.shape[1:]} per sample) with the model's outputs (shape {pred.shape[1:]} "
                f"per sample): {problem}. Choose a metric for these targets: top1 or top5 for "
                "class labels, a Keras metric such as mse for targets shaped like the outputs.")

    def display(self, value: float) -> float:
        """`value` in the unit reports show: percent for a percentage."""
        return 100 * value if self.percent else value

    def worse_by(self, value: float, reference: float) -> float:
        """How much worse `value` is than `reference`, in display units (negative: better)."""
        diff = self.display(value) - self.display(reference)
        return -diff if self.direction == "max" else diff

    def drop(self, value: float, reference: float) -> float:
        """How much worse `value` is than `reference`, in the metric's own units (a fraction
        for a percentage; negative: better)."""
        return reference - value if self.direction == "max" else value - reference

    @classmethod
    def from_dict(cls, spec: dict | None) -> "Metric":
        """The metric a report's `to_dict()` names (by name; top-1 for `None`)."""
        if not spec:
            return cls("top1")
        try:
            return cls(spec["name"], direction=spec["direction"])
        except ValueError:  # a function: only its name and direction were saved
            return cls(lambda t, p: 0.0, direction=spec["direction"], name=spec["name"])

    def better(self, a: float, b: float) -> bool:
        """True when `a` is strictly better than `b`."""
        return a > b if self.direction == "max" else a < b

    def format(self, value: float) -> str:
        return f"{100 * value:.2f} %" if self.percent else f"{value:.4g}"

    def to_dict(self) -> dict:
        return {"name": self.name, "direction": self.direction, "percent": self.percent}

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, direction={self.direction!r})"


def near_chance(accuracy: float, classes: int, samples: int) -> bool:
    """True when a top-1 accuracy is no better than guessing among `classes`, allowing for
    the noise of `samples` images (three standard deviations, and at least 5 points)."""
    if classes < 2 or samples < 1:
        return False
    chance = 1.0 / classes
    return accuracy <= chance + max(0.05, 3 * (chance * (1 - chance) / samples) ** 0.5)


def warn_if_near_chance(accuracy: float | None, classes: int, samples: int, what: str) -> None:
    """Warns in one line when `what` scores near chance: most often images in another range
    than the model was trained on (a Rescaling inside the model, `--input-range`)."""
    if accuracy is None or not near_chance(accuracy, classes, samples):
        return
    import warnings

    warnings.warn(
        f"{what} scores {100 * accuracy:.2f} % on {samples} images, no better than chance for "
        f"{classes} classes ({100 / classes:.2f} %): check that the images reach it in the range "
        "it was trained on (--input-range 0-255 for a model that rescales 0-255 pixels itself; "
        "Python: preprocessing=).", stacklevel=3)


def _is_keras_metric(value: Any) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover (keras is a core dependency)
        return False
    return isinstance(value, keras.metrics.Metric)


def as_metric(value: Any = None, direction: str | None = None) -> Metric:
    """A `Metric` from what a user passes (`None` is top-1)."""
    if value is None:
        value = "top1"
    if isinstance(value, Metric) and direction is None:
        return value
    return Metric(value, direction=direction)
