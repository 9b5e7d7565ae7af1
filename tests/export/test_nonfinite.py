"""Issue 12: NaN or inf never reaches a saved model or the LiteRT interpreter."""

import keras
import numpy as np
import pytest

from tfcompress import _training
from tfcompress.export import to_tflite
from tfcompress.quantization import quantize_aware


def _poisoned(model, layer="conv1"):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    kernel = copy.get_layer(layer).kernel
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[(0,) * (value.ndim - 1) + (slice(0, 3),)] = np.nan
    kernel.assign(value)
    return copy


def test_export_refuses_non_finite_weights_naming_the_layer(trained_cnn, mnist, tmp_path):
    bad = _poisoned(trained_cnn)
    for mode in ("float32", "int8"):
        with pytest.raises(ValueError, match="layer 'conv1' has 3 non-finite weights"):
            to_tflite(bad, tmp_path / f"{mode}.tflite", mode, mnist)
    # A quantization-aware NaN model made LiteRT crash the process: it is refused first.
    q = quantize_aware(bad)
    q(mnist.x_train[:8], training=True)
    with pytest.raises(ValueError, match="non-finite weights"):
        to_tflite(q, tmp_path / "qat.tflite", "int8")
    assert list(tmp_path.iterdir()) == []


def test_training_stops_on_a_non_finite_loss_and_writes_nothing(trained_cnn, mnist, tmp_path):
    from tfcompress.pruning import prune

    bad = _poisoned(trained_cnn, "logits")  # NaN logits: a NaN loss from the first batch
    bad.compile(optimizer="adam", loss=trained_cnn.loss, metrics=["accuracy"])
    with pytest.raises(ValueError, match="the loss became nan"):
        _training.fit(bad, (mnist.x_train[:256], mnist.y_train[:256]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="the loss became nan"):
        prune(bad, mnist, sparsity=0.5, epochs=1)
    assert list(tmp_path.iterdir()) == []
