"""Fine-tuning helpers shared by the transforms: copying a model with its compile settings."""

import os
import tempfile

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


def default_compile(model: keras.Model, learning_rate: float = 1e-3) -> str:
    """Compiles `model` for classification with clear defaults; returns what it chose."""
    logits = outputs_logits(model)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
        metrics=["accuracy"],
    )
    return (
        f"Adam(learning_rate={learning_rate:g}), sparse categorical cross-entropy "
        f"(from_logits={logits}), accuracy"
    )


def copy_model(model: keras.Model) -> keras.Model:
    """A deep copy of `model` with its weights and compile settings (optimizer state too).

    Goes through a `.keras` round trip, which is the one copy that keeps every compile setting.
    """
    with tempfile.TemporaryDirectory(prefix="tfcompress-copy-") as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        return keras.saving.load_model(path, compile=has_compile_settings(model))


def accuracy(model: keras.Model, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` on `(x, y)`."""
    import numpy as np

    pred = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(pred, axis=-1) == y))


def check_data_fits(model: keras.Model, ds) -> None:
    """Raises when the data's image shape is not the one `model` takes."""
    expected = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if expected is not None and expected != ds.input_shape:
        raise ValueError(
            f"The model expects images of shape {expected}, but the data has {ds.input_shape}. "
            "Pass the data the model was trained on."
        )


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
