"""TFLite metadata: every exported file records how its input is normalized and its class
names; bench reads them, so a file that rescales 0-255 pixels itself is fed 0-255 pixels."""

import warnings
import zipfile

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import _metadata
from tfcompress.data import Preprocessing


@pytest.fixture(scope="module")
def pixels_cnn(trained_cnn):
    """The trained CNN behind a Rescaling(1/255): it takes 0-255 pixels."""
    inputs = keras.Input((28, 28, 1))
    return keras.Model(inputs, trained_cnn(keras.layers.Rescaling(1 / 255)(inputs)))


@pytest.fixture(scope="module")
def digits(mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    x = (mnist.x_test[:200] * 255).round().astype(np.uint8)
    np.savez(path, x=x, y=mnist.y_test[:200])
    return path, mnist.x_test[:200], mnist.y_test[:200]


def test_an_export_records_the_input_normalization_and_the_labels(pixels_cnn, mnist, tmp_path):
    names = [f"digit {i}" for i in range(10)]
    path = tfc.export.to_tflite(pixels_cnn, tmp_path / "m.tflite", "int8",
                                representative_data="mnist", class_names=names).path
    meta = _metadata.read(path)
    assert meta.mean == (0.0,) and meta.std == (1.0,)  # (pixel - 0) / 1: the model rescales
    assert meta.color_space == "GRAYSCALE" and meta.labels == tuple(names)
    assert meta.preprocessing().input_range == "0-255"
    with zipfile.ZipFile(path) as z:  # the labels travel inside the file, as LiteRT's tools read
        assert z.read("labels.txt").decode().splitlines() == names
    # The file still runs, and its figures are the model's.
    interp = tfc._tflite.interpreter(path)
    assert interp.get_input_details()[0]["dtype"] == np.float32


@pytest.mark.parametrize("prep,mean,std", [
    (Preprocessing("0-1"), (0.0,), (255.0,)),
    (Preprocessing("-1-1"), (127.5,), (127.5,)),
    (Preprocessing("0-255", mean=(120.0, 110.0, 100.0), std=(60.0, 50.0, 40.0)),
     (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)),
])
def test_normalization_round_trips_through_the_metadata(trained_cnn, prep, mean, std,
                                                        tmp_path):
    assert _metadata.normalization(prep) == (mean, std)
    path = tfc.export.to_tflite(trained_cnn, tmp_path / "m.tflite", "float32",
                                preprocessing=prep).path
    back = _metadata.read(path).preprocessing()
    x = np.linspace(0, 1, 3 * 4, dtype=np.float32).reshape(4, 3)
    assert np.allclose(back.apply(x), prep.apply(x), atol=1e-4)


def test_bench_feeds_a_file_as_its_metadata_says(pixels_cnn, digits, tmp_path):
    path, x, y = digits
    model_file = tfc.export.to_tflite(pixels_cnn, tmp_path / "m.tflite", "float32").path
    keras_accuracy = float(np.mean(np.argmax(pixels_cnn.predict(x * 255, verbose=0), 1) == y))
    report = tfc.bench.benchmark(model_file, str(path), runs=2, split="all")
    assert report.accuracy == pytest.approx(keras_accuracy, abs=0.011)
    assert report.accuracy > 0.9  # not chance: the 0-255 pixels the file expects
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrong = tfc.bench.benchmark(model_file, str(path), runs=2, split="all",
                                    preprocessing="0-1")
    assert any("metadata says it takes images scaled to 0-255" in str(w.message)
               for w in caught)
    assert wrong.accuracy < 0.5


def test_a_microcontroller_file_carries_no_archive(trained_cnn, mnist, tmp_path):
    path = tfc.export.to_tflite(trained_cnn, tmp_path / "m.tflite", "int8",
                                representative_data=mnist, target="tflm").path
    assert not zipfile.is_zipfile(path)  # every byte goes to flash: the labels are in the .h
    meta = _metadata.read(path)
    assert meta is not None and meta.preprocessing().input_range == "0-1"
