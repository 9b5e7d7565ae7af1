"""Pins the converter behaviour `export/_selective.py` relies on: a post-training int8 export
keeps the named layers as float ops between DEQUANTIZE and QUANTIZE, all else int8."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import _tflite
from tfcompress.debug import sensitivity
from tfcompress.export import to_tflite


def _with_bad_fc1(trained_cnn):
    """The same function, but fc1's unit 0 outputs about 20,000 and the logits ignore it: fc1's
    one int8 output scale then rounds every other unit to a level or two."""
    model = keras.models.clone_model(trained_cnn)
    model.set_weights(trained_cnn.get_weights())
    bias = keras.ops.convert_to_numpy(model.get_layer("fc1").bias).copy()
    bias[0] = 20000.0
    model.get_layer("fc1").bias.assign(bias)
    kernel = keras.ops.convert_to_numpy(model.get_layer("logits").kernel).copy()
    kernel[0] = 0.0
    model.get_layer("logits").kernel.assign(kernel)
    return model


def test_named_layers_stay_float_and_recover_accuracy(trained_cnn, mnist, tmp_path):
    model = _with_bad_fc1(trained_cnn)
    scan = sensitivity(model, mnist, "quantize", num_samples=300)
    # fc1's output must stay float, so the layers reading it are kept float too.
    assert scan.float_layers() == ["fc1", "drop", "logits"]
    full = to_tflite(model, tmp_path / "all.tflite", "int8", representative_data=mnist)
    mixed = to_tflite(model, tmp_path / "mixed.tflite", "int8", representative_data=mnist,
                      float_layers=scan.float_layers())
    assert full.integer_only and not mixed.integer_only
    # fc1 and the logits layer (whose tensor is named after the model output) are float.
    assert [o.op for o in mixed.float_ops] == ["FULLY_CONNECTED"] * 2
    assert mixed.float_ops[0].layer == "fc1"
    assert mixed.op_counts["DEQUANTIZE"] >= 1
    interp = _tflite.interpreter(mixed.path)
    conv_dtypes = {np.dtype(interp.get_tensor_details()[op["outputs"][0]]["dtype"]).name
                   for op in interp._get_ops_details() if op["op_name"] == "CONV_2D"}
    assert conv_dtypes == {"int8"}
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    keras_acc = np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)
    acc = {r.path: np.mean(_tflite.predict_classes(_tflite.interpreter(r.path), x) == y)
           for r in (full, mixed)}
    assert keras_acc - acc[full.path] > 0.05  # the broken layer costs accuracy in int8 ...
    assert keras_acc - acc[mixed.path] < 0.02  # ... and keeping it float gives it back
    assert mixed.agreement > 0.97


def test_float_layers_are_refused_where_they_cannot_work(trained_cnn, mnist, tmp_path):
    with pytest.raises(ValueError, match="match no layer"):
        to_tflite(trained_cnn, tmp_path / "a.tflite", "int8", representative_data=mnist,
                  float_layers=["no_such_layer"])
    with pytest.raises(ValueError, match="post-training 'int8'"):
        to_tflite(trained_cnn, tmp_path / "b.tflite", "float16", float_layers=["fc1"])
    q = tfc.quantization.calibrate_ranges(trained_cnn, mnist, num_samples=100)
    with pytest.raises(ValueError, match="quantization-aware model"):
        to_tflite(q, tmp_path / "c.tflite", "int8", float_layers=["fc1"])
    assert not list(tmp_path.glob("*.tflite"))


def test_qat_with_auto_float_layers_keeps_them_float_in_the_file(trained_cnn, mnist,
                                                                 tmp_path):
    from tfcompress.quantization import float_layer_names, quantize_aware, strip_fake_quant

    model = _with_bad_fc1(trained_cnn)
    scan = sensitivity(model, mnist, "quantize", num_samples=300)
    with pytest.raises(ValueError, match="sensitivity scan"):
        quantize_aware(model, float_layers="auto")
    with pytest.raises(ValueError, match="another model"):
        quantize_aware(trained_cnn, float_layers="auto", sensitivity=scan)
    q = quantize_aware(model, float_layers="auto", sensitivity=scan)
    assert float_layer_names(q) == ["fc1", "logits"]
    q.compile(keras.optimizers.Adam(1e-5), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    q.fit(mnist.x_train[:1000], mnist.y_train[:1000], epochs=1, batch_size=64, verbose=0)
    # Stripped of fake-quant, the QAT model is a plain model with the same function.
    plain = strip_fake_quant(q)
    for layer in q._flatten_layers(include_self=False, recursive=True):
        if hasattr(layer, "simulate"):
            layer.simulate = False
    x = mnist.x_test[:64]
    np.testing.assert_allclose(plain.predict(x, verbose=0), q.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="representative_data"):
        to_tflite(q, tmp_path / "q.tflite", "int8")
    report = to_tflite(q, tmp_path / "q.tflite", "int8", representative_data=mnist)
    assert [o.op for o in report.float_ops] == ["FULLY_CONNECTED"] * 2
    y = mnist.y_test[:300]
    acc = np.mean(_tflite.predict_classes(_tflite.interpreter(report.path),
                                          mnist.x_test[:300]) == y)
    keras_acc = np.mean(np.argmax(model.predict(mnist.x_test[:300], verbose=0), -1) == y)
    assert acc > keras_acc - 0.03
