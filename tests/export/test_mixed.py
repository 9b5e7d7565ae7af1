"""Post-training int8 with chosen layers at 16-bit activations, through LiteRT's quantizer:
the file mixes int8 and int16 ops, runs on every CPU target and agrees with Keras."""

import numpy as np
import pytest

from tfcompress import quantization as Q
from tfcompress.bench import benchmark, inspect_model
from tfcompress.export import to_tflite


def test_chosen_layers_run_at_16_bits_in_tflm(trained_cnn, mnist, tmp_path):
    report = to_tflite(trained_cnn, tmp_path / "m.tflite", "int8", mnist, target="tflm",
                       int16_layers=["conv4", "fc1"], num_calibration_samples=50)
    assert report.int16_ops == 2 and report.integer_only
    assert report.op_counts["QUANTIZE"] >= 2  # int8 -> int16 and back at the borders
    assert inspect_model(report.path)["dtype_counts"]["int16"] >= 2
    assert report.agreement >= 0.98
    reference = benchmark(report.path, mnist, target="litert-reference", runs=1, warmup=0)
    float_acc = np.mean(trained_cnn.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert reference.accuracy >= float_acc - 0.01


def test_bad_16_bit_requests_get_one_line(trained_cnn, mnist, tmp_path):
    out = tmp_path / "x.tflite"
    with pytest.raises(ValueError, match=r"int16_layers \['conv9'\] match no layer"):
        to_tflite(trained_cnn, out, "int8", mnist, int16_layers=["conv9"],
                  num_calibration_samples=10)
    with pytest.raises(ValueError, match="int16_layers applies to post-training"):
        to_tflite(Q.quantize_aware(trained_cnn), out, "int8", mnist, int16_layers=["conv4"])
    with pytest.raises(ValueError, match="int16_layers applies to an 'int8' export"):
        to_tflite(trained_cnn, out, "int16x8", mnist, int16_layers=["conv4"])
    with pytest.raises(ValueError, match="does not go with float_layers"):
        to_tflite(trained_cnn, out, "int8", mnist, int16_layers=["conv4"],
                  float_layers=["fc1"])
    assert not out.exists()
