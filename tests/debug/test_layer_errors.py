import json

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.debug import layer_errors
from tfcompress.export import to_tflite


@pytest.fixture(scope="module")
def ptq_file(trained_cnn, mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("debug") / "ptq.tflite"
    to_tflite(trained_cnn, path, "int8", representative_data=mnist)
    return path


def test_a_post_training_file_matches_every_layer_closely(trained_cnn, mnist, ptq_file,
                                                          tmp_path):
    errors = layer_errors(trained_cnn, ptq_file, mnist, num_samples=32)
    assert errors.unmatched == ()
    names = [e.layer for e in errors.layers]
    # Conv + BatchNorm + ReLU become one op: its tensor is matched to the ReLU.
    assert names[:3] == ["relu1", "pool1", "relu2"] and "logits" in names
    relu1 = errors.layers[0]
    assert set(relu1.fused) == {"conv1", "bn1", "relu1"} and relu1.op == "CONV_2D"
    for e in errors.layers:
        assert e.snr_db > 20 and e.cosine > 0.99, e
        assert e.dtype == "int8" and 0 < e.rmse_in_scale < 2, e
    assert [e.noise_added for e in errors.worst(len(errors.layers))] == sorted(
        (e.noise_added for e in errors.layers), reverse=True)
    files = errors.save(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "layer_errors.json").read_text())
    assert len(data["layers"]) == len(errors.layers) and len(files) == 3
    assert (tmp_path / "out" / "layer_errors.png").read_bytes()[:4] == b"\x89PNG"
    assert "relu1" in str(errors)


def test_a_post_training_int4_file_is_compared_with_the_float_model(trained_cnn, mnist,
                                                                   ptq_file, tmp_path):
    # `export --weight-bits 4` of a float model goes through its quantization-aware copy
    # (layers `<name>_quant`, BatchNorm and ReLU folded in), and int4 depthwise has no
    # reference kernel: the debugger still matches every layer of the float model.
    q = tfc.quantization.calibrate_ranges(trained_cnn, mnist.x_train[:64], weight_bits=4)
    path = tmp_path / "int4.tflite"
    to_tflite(q, path, "int8")
    int4 = layer_errors(trained_cnn, path, mnist, num_samples=32)
    int8 = layer_errors(trained_cnn, ptq_file, mnist, num_samples=32)
    assert int4.unmatched == () and [e.layer for e in int4.layers][:3] == ["relu1", "pool1",
                                                                           "relu2"]
    assert set(int4.layers[0].fused) == {"conv1", "bn1", "relu1"}
    snr4 = {e.layer: e.snr_db for e in int4.layers}
    snr8 = {e.layer: e.snr_db for e in int8.layers}
    assert snr4.keys() == snr8.keys()
    assert all(snr4[n] < snr8[n] - 6 for n in ("relu1", "relu3", "logits"))  # 4 bits fewer
    assert set(int4.culprits(2)) <= {"conv1", "dw2", "pw2", "conv4", "fc1", "logits"}


def test_the_layer_with_a_bad_range_is_named_first(trained_cnn, mnist, tmp_path):
    # One outlier in fc1's kernel: Dense weights share one int8 scale, so every other
    # weight of fc1 is rounded to a few levels. The debugger must put fc1 on top.
    model = keras.models.clone_model(trained_cnn)
    model.set_weights(trained_cnn.get_weights())
    kernel = model.get_layer("fc1").kernel
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[0, 0] = 40 * np.abs(value).max()
    kernel.assign(value)
    path = tmp_path / "bad.tflite"
    to_tflite(model, path, "int8", representative_data=mnist)
    errors = layer_errors(model, path, mnist, num_samples=32)
    assert errors.worst(1)[0].layer == "fc1"
    assert errors.culprits(1) == ["fc1"]


def test_a_qat_file_with_integer_io(trained_cnn, mnist, tmp_path):
    q = tfc.quantization.calibrate_ranges(trained_cnn, mnist, num_samples=200)
    path = tmp_path / "qat.tflite"
    to_tflite(q, path, "int8", integer_io=True)
    errors = layer_errors(q, path, mnist, num_samples=16)
    assert errors.unmatched == ()
    assert {"conv1_quant", "fc1_quant", "logits_quant"} <= {e.layer for e in errors.layers}
    # The file runs exactly what the fake-quant model simulates: errors of a rounding step.
    for e in errors.layers:
        assert e.cosine > 0.999, e


def test_a_file_from_another_model_is_refused_naming_the_layers(trained_cnn, mnist, tmp_path):
    other = tfc.reference.reference_cnn(width=0.5)
    path = tmp_path / "other.tflite"
    to_tflite(other, path, "int8", representative_data=mnist)
    with pytest.raises(ValueError, match=r"does not look made from .*conv1"):
        layer_errors(trained_cnn, path, mnist, num_samples=4)


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_a_file_of_the_same_architecture_with_other_weights_is_refused(trained_cnn, mnist,
                                                                       ptq_file, tmp_path, mode):
    keras.utils.set_random_seed(1)
    retrained = keras.models.clone_model(trained_cnn)  # same names and shapes, other weights
    retrained.compile("adam", trained_cnn.loss)
    retrained.fit(mnist.x_train[:512], mnist.y_train[:512], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"holds other weights than .* pass the model the file "
                                         r"was made from"):
        layer_errors(retrained, ptq_file, mnist, num_samples=4)
    own = tmp_path / f"own_{mode}.tflite"
    to_tflite(retrained, own, mode, representative_data=mnist)
    assert layer_errors(retrained, own, mnist, num_samples=4).layers  # its own file is fine
