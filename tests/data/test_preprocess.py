"""Preprocessing declared once: the input range (and mean/std) images become for the model,
read from its first layer when it has one, recorded, and checked at calibration."""

import warnings

import keras
import numpy as np
import pytest

from tfcompress import _training
from tfcompress.data import Preprocessing, load
from tfcompress.export import to_tflite
from tfcompress.pipeline._data import splits as _splits


def _model(first=None):
    inputs = keras.Input((28, 28, 1))
    x = first(inputs) if first is not None else inputs
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))


def test_ranges_mean_and_std():
    x = np.array([[0.0], [0.5], [1.0]], np.float32)
    assert Preprocessing("-1-1").apply(x).ravel().tolist() == [-1.0, 0.0, 1.0]
    assert Preprocessing("0-255").apply(x).ravel().tolist() == [0.0, 127.5, 255.0]
    p = Preprocessing("0-255", mean=[127.5], std=[127.5])
    assert p.apply(x).ravel().tolist() == [-1.0, 0.0, 1.0] and p.bounds() == (-1.0, 1.0)
    with pytest.raises(ValueError, match="input_range must be one of"):
        Preprocessing("0-65535")
    with pytest.raises(ValueError, match="std must be > 0"):
        Preprocessing(std=[0.0])


def test_the_range_is_read_from_the_models_first_layer():
    assert Preprocessing.from_model(_model(keras.layers.Rescaling(1 / 255))).input_range == \
        "0-255"
    assert Preprocessing.from_model(_model(keras.layers.Rescaling(1 / 127.5, -1))) \
        .input_range == "0-255"
    assert Preprocessing.from_model(_model(keras.layers.Rescaling(2.0, -1))).input_range == "0-1"
    norm = keras.layers.Normalization(mean=[120.0], variance=[3000.0])
    assert Preprocessing.from_model(_model(norm)).input_range == "0-255"
    assert Preprocessing.from_model(_model()) is None


def test_loaders_apply_it_and_the_dataset_remembers(tmp_path):
    ds = load("mnist", preprocessing="0-255")
    assert ds.x_train.max() == pytest.approx(255.0) and ds.preprocessing.input_range == "0-255"
    assert load("mnist").x_train.max() <= 1.0
    rng = np.random.default_rng(0)
    y = np.arange(20) % 2
    np.savez(tmp_path / "int.npz", x=rng.integers(0, 256, (20, 8, 8, 1), np.uint8), y=y)
    np.savez(tmp_path / "float.npz", x=rng.normal(0, 50, (20, 8, 8, 1)).astype("float32"), y=y)
    assert load(tmp_path / "int.npz", preprocessing="-1-1").x_train.min() >= -1.0
    raw = load(tmp_path / "float.npz", preprocessing="-1-1")  # float arrays are as they are
    assert raw.x_train.max() > 10 and raw.preprocessing is None
    model = _model(keras.layers.Rescaling(1 / 255))
    fit, test, sources = _splits("mnist", None, 0, model=model)
    assert fit.x_train.max() > 200 and test.x_test.max() > 200
    assert "0-255" in sources["input"] and "rescaling" in sources["input"]
    _, _, given = _splits("mnist", None, 0, model=_model(), preprocessing="-1-1")
    assert given["input"].startswith("images scaled to -1-1")
    assert _training.load_for(model, "mnist", preprocessing="0-1").x_train.max() <= 1.0


def test_calibration_far_from_the_models_range_is_warned(tmp_path):
    model = _model(keras.layers.Rescaling(1 / 255))
    x01 = load("mnist").x_train[:64]
    with pytest.warns(UserWarning, match=r"span \[0, 1\], but the model expects about "
                                         r"\[0, 255\]"):
        to_tflite(model, tmp_path / "a.tflite", "int8", representative_data=x01)
    with warnings.catch_warnings():  # (the untrained model's agreement may be warned about)
        warnings.filterwarnings("error", message="The calibration images span")
        to_tflite(model, tmp_path / "b.tflite", "int8", representative_data=x01 * 255)
        to_tflite(model, tmp_path / "c.tflite", "int8", representative_data="mnist")  # read
