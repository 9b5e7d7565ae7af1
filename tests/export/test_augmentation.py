"""A model trained with Keras augmentation layers inside it exports: they pass images through
at inference, and the converter gets a graph without their random ops."""

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress._inference import augmentation_layers, without_augmentation


@pytest.fixture(scope="module")
def augmented(trained_cnn):
    """The trained CNN behind the augmentation of Keras' image-classification tutorial (a
    Sequential of random layers) and one more random layer."""
    inputs = keras.Input((28, 28, 1))
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                keras.layers.RandomRotation(0.1)], name="augment")
    h = keras.layers.RandomContrast(0.2)(augment(inputs))
    return keras.Model(inputs, trained_cnn(keras.layers.GaussianNoise(0.1)(h)))


def test_augmentation_layers_are_found_and_passed_through(augmented, mnist):
    assert set(augmentation_layers(augmented)) == {"augment", "random_contrast",
                                                   "gaussian_noise"}
    stripped, gone = without_augmentation(augmented)
    assert {"random_flip", "random_rotation"} <= gone
    x = mnist.x_test[:16]
    assert np.allclose(stripped.predict(x, verbose=0), augmented.predict(x, verbose=0),
                       atol=1e-6)


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_a_model_with_augmentation_layers_exports_and_agrees(augmented, mnist, tmp_path, mode):
    report = tfc.export.to_tflite(augmented, tmp_path / "m.tflite", mode,
                                  representative_data=mnist)
    assert report.agreement is not None and report.agreement >= 0.97
    assert not any("Random" in op for op in report.op_counts)


def test_qat_passes_augmentation_through_without_a_float_layer(augmented, mnist, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = tfc.quantization.quantize_aware(augmented)
    assert not [w for w in caught if "in float" in str(w.message)]
    assert not tfc.quantization.float_layer_names(q)
    calibrated = tfc.quantization.calibrate_ranges(augmented, mnist, num_samples=200)
    report = tfc.export.to_tflite(calibrated, tmp_path / "q.tflite", "int8")
    assert report.integer_only
