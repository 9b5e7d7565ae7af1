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
