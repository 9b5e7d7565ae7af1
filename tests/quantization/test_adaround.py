"""AdaRound: weights rounded up or down as the layer's output needs, on every backend, and the
file stores exactly the rounding chosen."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tfcompress.export import to_tflite

# Trains the reference CNN briefly, then post-training int4 with nearest rounding and with
# AdaRound (100 steps a layer): prints how far each is from the float model on test images,
# the share of weights AdaRound rounded away from the nearest level, and whether every kernel
# lies on its fake-quant grid.
_ROUND = """
import json
import keras
import numpy as np
import tfcompress as tfc
from tfcompress.quantization import _adaround, calibrate_ranges
from tfcompress.quantization._layers import _QuantWeightLayer, _fake_quant_weights

_adaround.STEPS = 100
keras.utils.set_random_seed(0)
ds = tfc.data.load("mnist")
model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
model.fit(ds.x_train, ds.y_train, epochs=1, batch_size=64, verbose=0)
x, test = ds.x_train[:256], ds.x_test[:300]
want = model.predict(test, verbose=0)
error, moved, on_grid = {}, [], True
for name, ada in (("nearest", False), ("adaround", True)):
    q = calibrate_ranges(model, x, method="minmax", num_samples=256, weight_bits=4,
                         adaround=ada)
    error[name] = float(np.mean(np.square(q.predict(test, verbose=0) - want)))
    for layer in q.layers:
        if not isinstance(layer, _QuantWeightLayer) or ada is False:
            continue
        k = keras.ops.convert_to_numpy(layer.kernel)
        if "Depthwise" in type(layer).__name__:
            k = k.reshape(k.shape[:-2] + (-1,))
        axis = -1 if layer.per_channel else None
        grid = keras.ops.convert_to_numpy(_fake_quant_weights(k, axis, 4))
        on_grid = on_grid and bool(np.allclose(grid, k, rtol=0, atol=1e-6 * np.abs(k).max()))
        original = keras.ops.convert_to_numpy(
            calibrate_ranges(model, x[:8], num_samples=8, weight_bits=4).get_layer(
                layer.name).kernel)
        if "Depthwise" in type(layer).__name__:
            original = original.reshape(k.shape)
        nearest = keras.ops.convert_to_numpy(_fake_quant_weights(original, axis, 4))
        moved.append(float(np.mean(np.abs(nearest - k) > 1e-6 * np.abs(k).max())))
    if ada:
        q.save("adaround.keras")
print(json.dumps({"backend": keras.backend.backend(), "error": error, "moved": moved,
                  "on_grid": on_grid}))
"""

BACKENDS = ["tensorflow", pytest.param("jax", marks=pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"))]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_adaround_brings_int4_outputs_closer_to_float_on_every_backend(backend, tmp_path,
                                                                        mnist):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_ROUND)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    assert result["on_grid"]  # the fake-quant finds the same range: it keeps the choice
    assert min(result["moved"]) > 0.02  # every layer rounded some weights the other way
    assert result["error"]["adaround"] < 0.8 * result["error"]["nearest"], result["error"]
    if backend != "tensorflow":
        return
    import keras

    q = keras.saving.load_model(tmp_path / "adaround.keras")
    report = to_tflite(q, tmp_path / "adaround.tflite", "int8", verify_data=mnist.x_test)
    assert report.integer_only and report.agreement >= 0.98 and report.weight_bits[4] >= 5


def test_adaround_from_the_command_line_and_a_recipe(trained_cnn_path, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tfcompress.cli import main
    from tfcompress.pipeline import load_recipe
    from tfcompress.quantization import _adaround

    monkeypatch.setattr(_adaround, "STEPS", 20)
    out = tmp_path / "ada.tflite"
    result = CliRunner().invoke(main, ["export", str(trained_cnn_path), "-o", str(out),
                                       "--data", "mnist", "--weight-bits", "4", "--adaround",
                                       "--calibration-samples", "64", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["weight_bits"] == {"4": 6}
    bad = tmp_path / "bad.tflite"
    result = CliRunner().invoke(main, ["export", str(trained_cnn_path), "-o", str(bad),
                                       "--data", "mnist", "--adaround", "--quantize",
                                       "float16"])
    assert result.exit_code != 0 and "--adaround goes with --quantize int8" in result.output
    assert "Traceback" not in result.output and not bad.exists()
    assert load_recipe({"steps": [{"export": {"adaround": True}}]}).steps[0].get("adaround")
    with pytest.raises(ValueError, match="export adaround repairs post-training int8 of a "
                                         "float model.*Drop the qat step or adaround"):
        load_recipe({"steps": [{"qat": {"epochs": 1}}, {"export": {"adaround": True}}]})
