import numpy as np
import pytest

from tests.conftest import litert_predict
from tfcompress import quantization as Q
from tfcompress.export import to_tflite
from tfcompress.quantization._calibrate import _mse_range


def test_mse_range_clips_an_outlier():
    values = np.concatenate([np.random.default_rng(0).normal(0, 1, 10_000), [80.0]])
    lo, hi = _mse_range(values, 8)
    assert hi < 80.0 and lo < 0 < hi


@pytest.mark.parametrize("method", Q.METHODS)
def test_calibrated_ptq_exports_integer_only_and_accurate(method, trained_cnn, mnist, tmp_path):
    q = Q.calibrate_ranges(trained_cnn, mnist, method=method, num_samples=200)
    assert trained_cnn is not q
    report = to_tflite(q, tmp_path / f"{method}.tflite", "int8")
    assert report.integer_only
    acc = np.mean(litert_predict(report.path, mnist.x_test).argmax(1) == mnist.y_test)
    float_acc = np.mean(trained_cnn.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert acc >= float_acc - 0.01


def test_bad_arguments(trained_cnn, mnist):
    with pytest.raises(ValueError, match="Unknown calibration method"):
        Q.calibrate_ranges(trained_cnn, mnist, method="kl")
    with pytest.raises(ValueError, match="percentile must be"):
        Q.calibrate_ranges(trained_cnn, mnist, percentile=20)


def test_equalization_keeps_the_function_and_bias_correction_exports(trained_cnn, mnist,
                                                                     tmp_path):
    import keras

    from tfcompress.quantization._equalize import equalize_pairs
    from tfcompress.quantization._layers import ActivationQuantizer, _QuantWeightLayer

    q = Q.quantize_aware(trained_cnn)
    points = [layer for layer in q.layers if isinstance(layer, (ActivationQuantizer,
                                                                _QuantWeightLayer))]
    points += [layer.output_quantizer for layer in q.layers
               if isinstance(layer, _QuantWeightLayer)]

    def unquantized():
        for p in points:
            p.simulate = False
        try:
            return keras.ops.convert_to_numpy(q(mnist.x_test[:200], training=False))
        finally:
            for p in points:
                p.simulate = True

    before = unquantized()
    dw = keras.ops.convert_to_numpy(q.get_layer("dw2_quant").kernel).reshape(-1, 16)
    spread = np.abs(dw).max(0).max() / np.abs(dw).max(0).min()
    # conv1 -> (pool) -> dw2 -> pw2 -> (pool) -> conv4, ReLU between; conv4 -> flatten stops;
    # fc1 -> (dropout) -> logits
    assert equalize_pairs(q) == [("conv1_quant", "dw2_quant"), ("dw2_quant", "pw2_quant"),
                                 ("pw2_quant", "conv4_quant"), ("fc1_quant", "logits_quant")]
    np.testing.assert_allclose(unquantized(), before, rtol=1e-3, atol=1e-4 * np.abs(
        before).max())
    dw = keras.ops.convert_to_numpy(q.get_layer("dw2_quant").kernel).reshape(-1, 16)
    assert np.abs(dw).max(0).max() / np.abs(dw).max(0).min() < spread  # ranges evened out

    report = to_tflite(trained_cnn, tmp_path / "cle.tflite", "int8", representative_data=mnist,
                       num_calibration_samples=100, equalize=True, bias_correction=True,
                       verify_data=mnist)
    assert report.integer_only and report.agreement >= 0.97
    acc = np.mean(litert_predict(report.path, mnist.x_test).argmax(1) == mnist.y_test)
    float_acc = np.mean(trained_cnn.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert acc >= float_acc - 0.01


def test_equalization_needs_its_structure(trained_cnn, mnist, tmp_path):
    import keras

    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu6", name="stem")(x)
    y = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h))
    with pytest.raises(ValueError, match="no pair of layers to balance.*layer 'stem' does "
                                         "not: it ends in relu6"):
        Q.calibrate_ranges(keras.Model(x, y), np.zeros((4, 8, 8, 3), "float32"),
                           equalize=True)
    with pytest.raises(ValueError, match="equalize applies to an 'int8' export"):
        to_tflite(trained_cnn, tmp_path / "x.tflite", "int16x8", mnist, equalize=True)
    with pytest.raises(ValueError, match="bias_correction applies to post-training"):
        to_tflite(Q.quantize_aware(trained_cnn), tmp_path / "x.tflite", "int8", mnist,
                  bias_correction=True)
    assert not (tmp_path / "x.tflite").exists()
