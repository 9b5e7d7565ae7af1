"""Keras 2 models come in: `.h5` files, SavedModel directories and `tf_keras` objects, written
by real `tf_keras` in a subprocess (it must not share a process with Keras 3 code)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from tfcompress import _legacy, _loading
from tfcompress.cli import main as cli

# A MobileNet-style Keras 2 model: DepthwiseConv2D (saved with `groups: 1`, which Keras 3
# refuses), BatchNormalization (axis saved as a list), ReLU6, a residual Add, a separable conv.
_BUILD = """
import numpy as np
import tensorflow as tf
import tf_keras as K
L = K.layers

def build(tf_op=False):
    i = K.Input((32, 32, 3), name="image")
    x = L.Rescaling(1 / 255.0)(i)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    if tf_op == "ops":  # TF-op nodes, as Keras 2 records them (MobileNetV3's hard-swish...)
        x = L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0) - tf.nn.relu6(x)[:, :, :, :8]
        x = tf.concat([x[:, :, :, :4], tf.reshape(x[:, :, :, 4:], (-1, 32, 32, 4))], axis=-1)
    elif tf_op:
        x = tf.math.cumsum(x, axis=1)  # no integer kernel, no keras.ops twin here
    x = L.ReLU(6.0, name="stem_relu")(x)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.Activation("relu", name="dw_relu")(y)
    y = L.Conv2D(8, 1, name="pw")(y)
    x = L.Add(name="add")([x, y])
    x = L.SeparableConv2D(16, 3, strides=2, name="sep")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = K.Model(i, L.Dense(5, name="logits")(L.Dropout(0.2)(x)), name="k2net")
    rng = np.random.default_rng(0)
    for w in model.weights:
        value = rng.normal(0, 0.3, w.shape) + (1.0 if "variance" in w.name else 0.0)
        w.assign(value.astype("float32"))
    return model
"""


def _run_tf_keras(code: str, cwd) -> str:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _BUILD + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory):
    pytest.importorskip("tf_keras")
    folder = tmp_path_factory.mktemp("keras2")
    _run_tf_keras("""
        m = build()
        m.save("k2.h5")
        m.save("k2_savedmodel")
        build(tf_op=True).save("tf_op.h5")
        x = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        np.savez("expected.npz", x=x, y=m.predict(x, verbose=0))
        ops_model = build(tf_op="ops")
        ops_model.save("ops.h5")
        np.save("ops_expected.npy", ops_model.predict(x, verbose=0))
    """, folder)
    return folder


@pytest.mark.parametrize("name", ["k2.h5", "k2_savedmodel"])
def test_keras2_files_load_as_keras3_with_the_same_outputs(keras2_files, name):
    model = _loading.load_keras_model(keras2_files / name)
    assert type(model).__module__.startswith("keras")
    assert model.get_layer("dw").__class__.__name__ == "DepthwiseConv2D"
    expected = np.load(keras2_files / "expected.npz")
    got = model.predict(expected["x"], verbose=0)
    np.testing.assert_allclose(got, expected["y"], atol=1e-5, rtol=1e-5)


def test_a_keras2_h5_file_exports_to_int8_and_compresses(keras2_files, tmp_path):
    from tfcompress.export import to_tflite
    from tfcompress.lowrank import factorize

    x = np.load(keras2_files / "expected.npz")["x"]
    report = to_tflite(str(keras2_files / "k2.h5"), tmp_path / "k2.tflite", "int8",
                       representative_data=x)
    assert report.integer_only and report.agreement is not None
    result = CliRunner().invoke(cli, ["export", str(keras2_files / "k2_savedmodel"), "-o",
                                      str(tmp_path / "sm.tflite"), "--quantize", "float16"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["factorize", str(keras2_files / "k2_savedmodel"), "-o",
                                      str(tmp_path / "f.keras"), "--rank", "pw=8"])
    assert result.exit_code == 0, result.output
    model = _loading.load_keras_model(keras2_files / "k2.h5")
    small = factorize(model, ranks={"pw": 8})
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)


def test_a_layer_keras3_cannot_carry_over_is_named_in_one_line(keras2_files, tmp_path):
    with pytest.raises(ValueError, match=r"layer 'tf.math.cumsum' is the TensorFlow op "
                                         r"tf.math.cumsum, which tfcompress cannot rebuild"):
        _loading.load_keras_model(keras2_files / "tf_op.h5")
    result = CliRunner().invoke(cli, ["export", str(keras2_files / "tf_op.h5"), "-o",
                                      str(tmp_path / "r.tflite"), "--quantize", "float16"])
    assert result.exit_code != 0 and "tf.math.cumsum" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r.tflite").exists()


def test_a_layer_that_computes_differently_is_named(keras2_files, tmp_path):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    dump = tmp_path / "dump.npz"
    subprocess.run([sys.executable, "-m", "tfcompress._legacy", str(keras2_files / "k2.h5"),
                    str(dump)], env=env, check=True, capture_output=True)
    arrays = dict(np.load(dump))
    arrays["o|pw|0"] = arrays["o|pw|0"] + 0.1  # as if Keras 3 computed `pw` differently
    np.savez(dump, **arrays)
    with pytest.raises(ValueError, match=r"layer 'pw' \(Conv2D\) computes differently"):
        _legacy.from_dump(str(dump), "k2.h5")


def test_without_tf_keras_an_h5_is_read_unverified_with_a_warning(keras2_files, monkeypatch):
    monkeypatch.setattr(_legacy, "tf_keras_available", lambda: False)
    with pytest.warns(UserWarning, match="not checked against Keras 2"):
        model = _loading.load_keras_model(keras2_files / "k2.h5")
    expected = np.load(keras2_files / "expected.npz")
    np.testing.assert_allclose(model.predict(expected["x"], verbose=0), expected["y"],
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs tf_keras"):
        _loading.load_keras_model(keras2_files / "k2_savedmodel")


def test_a_tf_keras_model_object_goes_through_every_transform(keras2_files):
    out = _run_tf_keras("""
        import tfcompress as tfc
        from tfcompress.quantization import quantize_aware
        from tfcompress.lowrank import factorize
        from tfcompress.export import to_tflite
        m = build()
        x = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        q = quantize_aware(m)
        f = factorize(m, ranks={"pw": 8})
        report = to_tflite(m, "object.tflite", "float16", verify_data=x)
        print("types", type(q).__module__, type(f).__module__)
        print("agreement", report.agreement)
        print("diff", float(np.abs(f.predict(x, verbose=0) - m.predict(x, verbose=0)).max()))
    """, keras2_files)
    types = out.split("types ")[1].split("\n")[0].split()
    assert all(t.startswith("keras.src") for t in types), types
    assert float(out.split("diff ")[1].split()[0]) < 1e-4
    assert float(out.split("agreement ")[1].split()[0]) == 1.0


def test_tf_op_nodes_become_keras_ops_and_quantize(keras2_files, tmp_path):
    from tfcompress.export import to_tflite
    from tfcompress.quantization import quantize_aware

    model = _loading.load_keras_model(keras2_files / "ops.h5")
    assert not any("OpLambda" in type(layer).__name__ or "TFOp" in type(layer).__name__
                   for layer in model.layers)
    x = np.load(keras2_files / "expected.npz")["x"]
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               np.load(keras2_files / "ops_expected.npy"), atol=1e-5, rtol=1e-5)
    q = quantize_aware(model)
    for _ in range(25):
        q(x, training=True)
    assert to_tflite(q, tmp_path / "ops.tflite", "int8").integer_only


def test_a_savedmodel_that_is_not_keras_is_refused_in_one_line(tmp_path):
    from tfcompress.reference import reference_cnn

    pytest.importorskip("tf_keras")
    saved = tmp_path / "plain"
    reference_cnn().export(saved, format="tf_saved_model", verbose=False)
    with pytest.raises(ValueError, match="is a SavedModel that is not a Keras model.*exported "
                                         "to TFLite but not fine-tuned"):
        _loading.load_keras_model(saved)


# A Lambda whose code leaves a mark: it must not run unless the user passes --unsafe.
_LAMBDA = """
import pathlib
def lambda_model(marker):
    code = f"lambda x: (__import__('pathlib').Path({marker!r}).write_text('ran'), x)[1]"
    i = K.Input((4,), name="x")
    y = L.Lambda(eval(code), name="lam")(i)
    return K.Model(i, L.Dense(2, name="out")(y))
"""


@pytest.fixture(scope="module")
def lambda_files(tmp_path_factory):
    pytest.importorskip("tf_keras")
    folder = tmp_path_factory.mktemp("lambda")
    _run_tf_keras(_LAMBDA + f"""
m = lambda_model({str(folder / "RAN")!r})
m.save("lam.h5")
m.save("lam_savedmodel")
pathlib.Path({str(folder / "RAN")!r}).unlink()  # building and saving ran the code
""", folder)
    assert not (folder / "RAN").exists()
    return folder


@pytest.mark.parametrize("name", ["lam.h5", "lam_savedmodel"])
@pytest.mark.parametrize("command", [["export", "--quantize", "float32"], ["prune"],
                                     ["export", "--target", "tflm"]])
def test_a_keras2_lambda_does_not_run_without_unsafe(lambda_files, tmp_path, name, command):
    marker = lambda_files / "RAN"
    out = tmp_path / ("m.keras" if command[0] == "prune" else "m.tflite")
    args = [command[0], str(lambda_files / name), "-o", str(out), *command[1:]]
    if command[0] != "export" or "--target" in command:
        args += ["--data", "mnist"]
    result = CliRunner().invoke(cli, args)
    assert not marker.exists(), "the Lambda's code ran"
    if name.endswith("savedmodel") and command[0] == "export":
        # the converter reads the SavedModel's traced graph: no Python code of the file runs
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "layer 'lam' is a Lambda" in result.output and "--unsafe" in result.output
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_keras2_lambda_is_refused_without_tf_keras_too(lambda_files, monkeypatch):
    monkeypatch.setattr(_legacy, "tf_keras_available", lambda: False)
    with pytest.raises(_legacy.UnsafeModelError, match="safe_mode=False"):
        _loading.load_keras_model(lambda_files / "lam.h5")
    assert not (lambda_files / "RAN").exists()


def test_with_unsafe_the_lambda_runs_and_is_named(lambda_files):
    with pytest.raises(ValueError, match="'lam' \\(Lambda\\)"):
        _loading.load_keras_model(lambda_files / "lam.h5", safe_mode=False)
    assert (lambda_files / "RAN").exists()  # the user trusted the file: Keras 2 read it
    (lambda_files / "RAN").unlink()


def test_configs_are_checked_for_code_before_reading():
    tf_op = {"class_name": "TFOpLambda", "config": {"name": "w", "function": "io.write_file"}}
    custom = {"class_name": "Evil", "module": "evil.module", "config": {"name": "e"}}
    registered = {"class_name": "Dense", "registered_name": "pkg>Dense", "config": {"name": "d"}}
    plain = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d", "kernel_initializer": {
            "class_name": "GlorotUniform", "config": {}}}},
        {"class_name": "TFOpLambda", "config": {"name": "a", "function": "math.add"}}]}}
    assert _legacy.code_in_config(plain, {"Dense", "GlorotUniform"}) == []
    found = _legacy.code_in_config([tf_op, custom, registered], {"Dense"})
    assert [unsafe for unsafe, _ in found] == [False, True, True]
    assert "tf.io.write_file" in found[0][1] and "'Evil'" in found[1][1]
    with pytest.raises(_legacy.LegacyModelError, match="tf.io.write_file"):
        _legacy.refuse_code(found, "f.h5", safe_mode=False)  # no mode rebuilds it
    _legacy.refuse_code(found[1:], "f.h5", safe_mode=False)  # trusted: read by Keras 2
    with pytest.raises(_legacy.UnsafeModelError, match="'Evil'.*\\(and 1 more\\)"):
        _legacy.refuse_code(found[1:], "f.h5")
