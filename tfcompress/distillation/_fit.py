"""`distill`: train a student from a teacher on a dataset in one call (used by the CLI)."""

import time
from dataclasses import asdict, dataclass
from typing import Any

import keras

from tfcompress import _legacy, _options, _training
from tfcompress.distillation._distiller import Distiller


@dataclass(frozen=True)
class DistillResult:
    """Top-1 accuracy of teacher and student (`None` when the targets are not class labels),
    their sizes, and the settings used."""

    teacher_accuracy: float | None
    student_accuracy: float | None
    teacher_params: int
    student_params: int
    epochs: int
    temperature: float
    alpha: float
    seconds: float

    @property
    def param_ratio(self) -> float:
        return self.student_params / max(1, self.teacher_params)

    def to_dict(self) -> dict:
        return {**asdict(self), "param_ratio": round(self.param_ratio, 4)}


def distill(
    teacher: keras.Model,
    student: keras.Model,
    data: Any,
    epochs: int = _options.DISTILL["epochs"],
    batch_size: int = _options.DISTILL["batch_size"],
    learning_rate: float = _options.DISTILL["learning_rate"],
    temperature: float = _options.DISTILL["temperature"],
    alpha: float = _options.DISTILL["alpha"],
    feature_layers: tuple[str, str] | None = None,
    precompute_teacher: bool = True,
    callbacks: list | None = None,
    verbose: int = 0,
) -> tuple[keras.Model, DistillResult]:
    """Distills `teacher` into a copy of `student` on `data`; both inputs are left untouched.

    Args:
        teacher: A trained Keras model.
        student: The model to train (its weights are the starting point).
        data: A `Dataset` or a loader source (`"mnist"`, `"shapes"`, a path).
        epochs: Training epochs. Defaults to `5`.
        batch_size: Batch size. Defaults to `64`.
        learning_rate: Adam's learning rate. Defaults to `1e-3`.
        temperature: Softmax temperature. Defaults to `4.0`.
        alpha: Weight of the hard-label loss. Defaults to `0.1`.
        feature_layers: `(teacher_layer, student_layer)` to match too. Defaults to `None`.
        precompute_teacher: Compute the teacher's outputs once (the loaders do not augment).
            Defaults to `True`.
        callbacks: Extra Keras callbacks, e.g. `tfcompress.pruning.Pruning`. Defaults to
            `None`.
        verbose: Keras `fit` verbosity. Defaults to `0`.

    Returns:
        `(trained_student, DistillResult)`.

    Raises:
        ValueError: For data that does not fit the models, or bad distillation settings.
    """
    teacher = _legacy.keras3(teacher)  # a Keras 2 (tf_keras) model is carried over
    student = _legacy.keras3(student)  # a Keras 2 (tf_keras) model is carried over
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    ds = _training.load_for(teacher, data)
    _training.check_data_fits(student, ds)
    trained = _training.copy_model(student)
    distiller = Distiller(teacher, trained, temperature=temperature, alpha=alpha,
                          feature_layers=feature_layers,
                          # a stream is read batch by batch: the teacher runs on each batch
                          precompute_teacher=precompute_teacher and ds.train.in_memory)
    distiller.compile(keras.optimizers.Adam(learning_rate),
                      metrics=None if _training.is_detector(teacher) else ["accuracy"])
    start = time.perf_counter()
    _training.fit(distiller, ds.train, epochs=epochs, batch_size=batch_size,
                  callbacks=list(callbacks or []), verbose=verbose)
    seconds = time.perf_counter() - start
    _training.compile_like(trained, student, learning_rate)
    result = DistillResult(
        teacher_accuracy=_training.evaluate(teacher, ds.test),
        student_accuracy=_training.evaluate(trained, ds.test),
        teacher_params=teacher.count_params(), student_params=trained.count_params(),
        epochs=epochs, temperature=float(temperature), alpha=float(alpha),
        seconds=round(seconds, 2),
    )
    return trained, result
