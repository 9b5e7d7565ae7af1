import os

import keras
import numpy as np
import pytest

from tests.conftest import litert_predict
from tfcompress import bench
from tfcompress.export import QUANTIZATION_MODES, to_tflite

# Share of top-1 predictions the export must agree on with the Keras model.
_AGREEMENT = {"float32": 1.0, "float16": 0.995, "dynamic": 0.99, "int8": 0.98, "int16x8": 0.99}


@pytest.fixture(scope="module")
def keras_logits(trained_cnn, mnist):
    return trained_cnn.predict(mnist.x_test, verbose=0)


@pytest.mark.parametrize("mode", QUANTIZATION_MODES)
def test_every_mode_runs_in_litert_and_agrees_with_keras(mode, trained_cnn, mnist, keras_logits,
                                                          tmp_path):
    out = tmp_path / f"{mode}.tflite"
    report = to_tflite(trained_cnn, out, mode, representative_data=mnist)
    assert out.is_file() and report.size_bytes == out.stat().st_size
    lite = litert_predict(out, mnist.x_test)
    agreement = np.mean(lite.argmax(1) == keras_logits.argmax(1))
    assert agreement >= _AGREEMENT[mode], f"{mode}: {agreement:.4f}"
    if mode == "float32":
        np.testing.assert_allclose(lite, keras_logits, atol=1e-4)
    assert report.integer_only == (mode in ("int8", "int16x8"))
    assert report.to_dict()["quantization"] == mode


def test_int8_is_integer_only_accurate_and_small(trained_cnn, mnist, keras_logits, tmp_path):
    f32 = to_tflite(trained_cnn, tmp_path / "f32.tflite", "float32")
    int8 = to_tflite(trained_cnn, tmp_path / "int8.tflite", "int8", representative_data=mnist)
    assert int8.float_ops == ()
    info = bench.inspect_model(int8.path)
    compute = {op: d for op, d in info["op_dtypes"].items() if op not in ("QUANTIZE", "DEQUANTIZE")}
    assert all("float32" not in d for d in compute.values()), compute
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(compute)
    keras_acc = np.mean(keras_logits.argmax(1) == mnist.y_test)
    lite_acc = np.mean(litert_predict(int8.path, mnist.x_test).argmax(1) == mnist.y_test)
    assert abs(lite_acc - keras_acc) <= 0.005
    assert int8.size_bytes <= 0.3 * f32.size_bytes


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_integer_io(mode, trained_cnn, mnist, tmp_path):
    report = to_tflite(trained_cnn, tmp_path / "io.tflite", mode, representative_data=mnist,
                       integer_io=True)
    wanted = "int8" if mode == "int8" else "int16"
    assert report.inputs[0].dtype == wanted and report.outputs[0].dtype == wanted
    assert report.inputs[0].scale > 0
    assert "QUANTIZE" not in report.op_counts
    acc = np.mean(litert_predict(report.path, mnist.x_test).argmax(1) == mnist.y_test)
    assert acc > 0.9


def test_from_keras_file_and_saved_model(trained_cnn, trained_cnn_path, mnist, tmp_path):
    a = to_tflite(trained_cnn_path, tmp_path / "a.tflite", "int8", representative_data="mnist")
    saved = tmp_path / "saved"
    trained_cnn.export(saved, format="tf_saved_model", verbose=False)
    b = to_tflite(saved, tmp_path / "b.tflite", "int8", representative_data=mnist.x_train[:100])
    pa = litert_predict(a.path, mnist.x_test[:200]).argmax(1)
    pb = litert_predict(b.path, mnist.x_test[:200]).argmax(1)
    assert np.mean(pa == pb) >= 0.98
    assert a.integer_only and b.integer_only


def test_representative_data_as_batches(trained_cnn, mnist, tmp_path):
    batches = (mnist.x_train[i : i + 32] for i in range(0, 256, 32))
    report = to_tflite(trained_cnn, tmp_path / "m.tflite", "int8", representative_data=batches,
                       num_calibration_samples=64)
    assert report.calibration_samples == 64


def test_int8_without_calibration_data_is_refused(trained_cnn, tmp_path):
    with pytest.raises(ValueError, match="needs representative_data"):
        to_tflite(trained_cnn, tmp_path / "m.tflite", "int8")
    assert not (tmp_path / "m.tflite").exists()


def test_unknown_mode_and_misplaced_integer_io(trained_cnn, tmp_path):
    with pytest.raises(ValueError, match="Unknown quantization 'int4'"):
        to_tflite(trained_cnn, tmp_path / "m.tflite", "int4")
    with pytest.raises(ValueError, match="integer_io applies"):
        to_tflite(trained_cnn, tmp_path / "m.tflite", "float16", integer_io=True)


def test_wrong_data_shape_is_refused(trained_cnn, tmp_path):
    with pytest.raises(ValueError, match=r"expects images of shape \(28, 28, 1\)"):
        to_tflite(trained_cnn, tmp_path / "m.tflite", "int8",
                  representative_data=np.zeros((10, 32, 32, 3), np.float32))


def test_never_overwrites_its_input(trained_cnn_path):
    before = trained_cnn_path.read_bytes()
    with pytest.raises(ValueError, match="never overwrites"):
        to_tflite(trained_cnn_path, trained_cnn_path, "float32")
    assert trained_cnn_path.read_bytes() == before


def test_written_file_gets_the_usual_permissions(trained_cnn, tmp_path):
    # Written through a private temporary file, it must still end up as open() would make it.
    umask = os.umask(0o022)
    try:
        to_tflite(trained_cnn, tmp_path / "m.tflite", "float32")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(umask)
    mode = (tmp_path / "m.tflite").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o644


def test_float_only_op_fails_cleanly_and_writes_nothing(mnist, tmp_path):
    # Erf has no int8 kernel in TFLite.
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8)(x)
    x = keras.layers.Activation(keras.ops.erf)(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    out = tmp_path / "erf.tflite"
    with pytest.raises(ValueError, match="(?i)float|integer kernel"):
        to_tflite(model, out, "int8", representative_data=mnist)
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temp file left


def test_lambda_layer_needs_explicit_unsafe(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="--unsafe"):
        to_tflite(path, tmp_path / "l.tflite", "float32")
    report = to_tflite(path, tmp_path / "l.tflite", "float32", safe_mode=False)
    assert report.size_bytes > 0


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt or not a Keras model"):
        to_tflite(bad, tmp_path / "x.tflite", "float32")


def test_a_multi_output_file_is_read_in_the_models_output_order(tmp_path):
    """LiteRT lists a two-headed model's (135, 4) outputs in its own order; they are matched to
    the Keras outputs through the serving signature (output_0, output_1)."""
    from tfcompress import _tflite

    layers = keras.layers
    inputs = keras.Input((96, 96, 3))
    f = layers.Conv2D(8, 3, strides=8, padding="same", activation="relu")(inputs)
    g = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(f)
    heads = {name: [layers.Reshape((-1, 4))(layers.Conv2D(12, 3, padding="same")(m))
                    for m in (f, g)] for name in ("classes", "boxes")}
    model = keras.Model(inputs, [layers.Concatenate(axis=1, name=n)(h) for n, h in heads.items()])
    x = np.random.default_rng(0).uniform(size=(3, 96, 96, 3)).astype(np.float32)
    report = to_tflite(model, tmp_path / "det.tflite", "float32")
    got = _tflite.run_all(_tflite.interpreter(report.path), x)
    want = model.predict(x, verbose=0)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert np.allclose(_tflite.run(_tflite.interpreter(report.path), x), want[0], atol=1e-4)
