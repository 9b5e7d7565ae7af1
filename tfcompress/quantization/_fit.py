"""Quantization-aware fine-tuning of a trained model, as the CLI and the demo run it."""

from dataclasses import dataclass
from typing import Any

import keras

from tfcompress import _legacy, _options, _teacher, _training
from tfcompress.quantization._transform import quantize_aware


@dataclass(frozen=True)
class QatResult:
    """Top-1 accuracy of the float model and of its quantization-aware copy after fine-tuning
    (`None` when the targets are not class labels)."""

    accuracy_float: float | None
    accuracy_qat: float | None
    epochs: int
    compile_settings: str

    def to_dict(self) -> dict:
        return {"accuracy_float": self.accuracy_float, "accuracy_qat": self.accuracy_qat,
                "epochs": self.epochs, "compile_settings": self.compile_settings}


def train_quantized(
    model: keras.Model,
    data: Any,
    epochs: int = _options.QAT["epochs"],
    batch_size: int = _options.QAT["batch_size"],
    learning_rate: float = _options.QAT["learning_rate"],
    verbose: int = 0,
    callbacks: list | None = None,
    teacher: keras.Model | None = None,
    **quantize_kwargs: Any,
) -> tuple[keras.Model, QatResult]:
    """Quantization-aware fine-tuning: `quantize_aware(model)`, compiled and fit on `data`.

    The copy keeps the model's loss (a model saved without compile settings gets sparse
    categorical cross-entropy, logits detected from its last layer) and trains with Adam at a
    small learning rate, as QAT fine-tuning wants.

    Args:
        model: A trained functional or Sequential model (not modified).
        data: A `Dataset` or a loader source (`"mnist"`, a path).
        epochs: Fine-tuning epochs. Defaults to `1`.
        batch_size: Batch size. Defaults to `64`.
        learning_rate: Adam's learning rate. Defaults to `1e-4`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        callbacks: Extra Keras callbacks for the fine-tuning (e.g. early stopping). Defaults
            to `None`.
        teacher: A classifier whose outputs the fine-tuning follows as well as the labels
            (knowledge distillation; e.g. `model` itself). Defaults to `None`.
        **quantize_kwargs: Passed to `quantize_aware` (e.g. `float_layers`).

    Returns:
        `(qat_model, QatResult)`; export the model with `to_tflite(qat_model, path, "int8")`.

    Raises:
        ValueError: For `epochs < 1` or data that does not fit the model.
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    ds = _training.load_for(model, data)
    q = quantize_aware(model, **quantize_kwargs)
    loss, metrics, words = _training.default_loss(model)
    if _training.has_compile_settings(model):
        loss, words = model.loss, "the model's loss"
    settings = f"{words}, Adam(learning_rate={learning_rate:g})"
    q.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    with _teacher.following(teacher, q, ds.train) as train:
        _training.fit(q, train, epochs=epochs, batch_size=batch_size,
                      verbose=verbose, callbacks=callbacks)
    result = QatResult(
        accuracy_float=_training.evaluate(model, ds.test),
        accuracy_qat=_training.evaluate(q, ds.test),
        epochs=epochs,
        compile_settings=settings,
    )
    return q, result
