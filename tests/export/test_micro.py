"""Deploying where users deploy: verification on LiteRT's reference kernels and TFLite Micro, the
microcontroller artifact, integer I/O helpers and int16x8 from quantization-aware training."""

import json
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tfcompress import _tflite
from tfcompress.bench import benchmark
from tfcompress.cli import main
from tfcompress.export import dequantize_output, quantize_input, to_tflite
from tfcompress.quantization import quantize_aware


@pytest.fixture(scope="module")
def qat_cnn(trained_cnn, mnist):
    q = quantize_aware(trained_cnn)
    q.compile(keras.optimizers.Adam(1e-4), trained_cnn.loss)
    q.fit(mnist.x_train[:512], mnist.y_train[:512], epochs=1, verbose=0)
    return q


@pytest.fixture(scope="module")
def micro(qat_cnn, mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("micro") / "cnn.tflite"
    return to_tflite(qat_cnn, path, "int8", verify_data=mnist, target="tflm",
                     class_names=mnist.class_names)


def test_microcontroller_export_is_fixed_batch_integer_and_agrees(micro):
    assert micro.integer_only and micro.target == "tflm"
    assert micro.inputs[0].shape == (1, 28, 28, 1) and micro.inputs[0].dtype == "int8"
    assert micro.outputs[0].dtype == "int8"
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(micro.op_counts)
    assert micro.agreement >= 0.995 and micro.agreement_samples == 200
    report = micro.micro
    assert report.ops == tuple(sorted(micro.op_counts))
    assert 0 < report.arena_bytes_measured < report.arena_bytes < 64 * 1024
    assert report.model_flash_bytes == micro.size_bytes


def test_the_c_sources_hold_the_model_and_compile(micro):
    h, cc, ops = micro.micro.files
    header = open(h).read()
    assert f"constexpr int kCnnArenaSize = {micro.micro.arena_bytes};" in header
    assert f"constexpr int kCnnInputZeroPoint = {micro.inputs[0].zero_point};" in header
    assert "kCnnNumClasses = 10;" in header
    assert f"g_cnn_model_len = {micro.size_bytes};" in open(cc).read()
    resolver = open(ops).read()
    assert f"MicroMutableOpResolver<{len(micro.micro.ops)}>" in resolver
    for call in ("AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected", "AddMaxPool2D"):
        assert f"resolver.{call}()" in resolver
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on this machine")
    out = subprocess.run([compiler, "-std=c++17", "-Wall", "-Werror", "-c", cc, "-o",
                          cc + ".o"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert os.path.getsize(cc + ".o") > micro.size_bytes  # the array is in the object


def test_budgets_and_missing_kernels_refuse_and_write_nothing(qat_cnn, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="over --max-ram 4,096"):
        to_tflite(qat_cnn, path, "int8", target="tflm", max_ram=4096)
    with pytest.raises(ValueError, match="over --max-flash 1,000"):
        to_tflite(qat_cnn, path, "int8", target="tflm", max_flash=1000)
    inputs = keras.Input((8,))
    x = keras.layers.Lambda(lambda t: keras.ops.sort(t), name="sorter")(
        keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    with pytest.raises(ValueError, match=r"no kernel for TOPK_V2 \(from layer 'sorter'\)"):
        to_tflite(model, path, "float32", target="tflm")
    assert list(tmp_path.iterdir()) == []


def test_reference_kernels_and_tflm_agree_to_one_step(micro, mnist):
    x = mnist.x_test[:100]
    ref = _tflite.run(_tflite.interpreter(micro.path, target="litert-reference"), x)
    tflm = _tflite.run(_tflite.interpreter(micro.path, target="tflm"), x)
    step = micro.outputs[0].scale  # at most one rounding step apart, same top-1
    np.testing.assert_allclose(ref, tflm, rtol=0, atol=step * 1.001)
    assert np.mean(np.argmax(ref, -1) == np.argmax(tflm, -1)) >= 0.99
    reports = [benchmark(micro.path, mnist, runs=3, target=t, max_samples=200)
               for t in ("litert", "litert-reference", "tflm")]
    assert [r.to_dict()["runtime"] for r in reports] == [
        "LiteRT (XNNPACK)", "LiteRT reference kernels", "TFLite Micro"]
    assert reports[1].accuracy == reports[2].accuracy > 0.85


def _zero_point_vectors(content: bytes) -> tuple[int, int]:
    """(tensors with per-channel zero points, distinct vectors they point to) of a file."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    offsets = []
    for t in range(graph.TensorsLength()):
        q = graph.Tensors(t).Quantization()
        if q is not None and q.ZeroPointLength() > 1:
            offsets.append(q._tab.Vector(q._tab.Offset(10)))  # field 3: zero_point
    return len(offsets), len(set(offsets))


def test_a_microcontroller_file_keeps_one_copy_of_each_zero_point_vector(micro, mnist):
    from tensorflow.lite.tools import flatbuffer_utils

    shared = open(micro.path, "rb").read()
    tensors, vectors = _zero_point_vectors(shared)
    assert tensors >= 8 and vectors < tensors / 2  # per-channel weights and biases share them
    # the same model as the converter writes it: a copy of the vector for every tensor
    plain = flatbuffer_utils.convert_object_to_bytearray(
        flatbuffer_utils.convert_bytearray_to_object(bytearray(shared)))
    assert _zero_point_vectors(plain) == (tensors, tensors)
    assert len(shared) < len(plain)
    x = mnist.x_test[:50]
    for target in ("litert-reference", "tflm"):  # the same numbers from both files
        np.testing.assert_array_equal(
            _tflite.run(_tflite.interpreter(shared, target=target), x),
            _tflite.run(_tflite.interpreter(plain, target=target), x))


def test_integer_io_helpers_read_the_files_parameters(micro, qat_cnn, mnist):
    x = mnist.x_test[:20]
    q = quantize_input(x, micro)
    scale, zero = micro.inputs[0].scale, micro.inputs[0].zero_point
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, np.clip(np.round(x / scale) + zero, -128, 127))
    interp = _tflite.interpreter(micro.path)
    out = []
    for i in range(len(x)):
        interp.set_tensor(interp.get_input_details()[0]["index"], q[i:i + 1])
        interp.invoke()
        out.append(dequantize_output(interp.get_tensor(
            interp.get_output_details()[0]["index"]), micro.path)[0])
    agree = np.argmax(np.stack(out), -1) == np.argmax(qat_cnn.predict(x, verbose=0), -1)
    assert agree.mean() >= 0.95


def test_int16x8_from_16_bit_qat_runs_on_litert_and_tflm(trained_cnn, mnist, tmp_path):
    q = quantize_aware(trained_cnn, activation_bits=16)
    q.compile(keras.optimizers.Adam(1e-4), trained_cnn.loss)
    q.fit(mnist.x_train[:256], mnist.y_train[:256], epochs=1, verbose=0)
    for target in ("litert", "tflm"):
        report = to_tflite(q, tmp_path / f"{target}.tflite", "int16x8", verify_data=mnist,
                           target=target)
        assert report.integer_only and report.agreement >= 0.99, (target, report.agreement)
    with pytest.raises(ValueError, match="simulates int16x8"):
        to_tflite(q, tmp_path / "x.tflite", "int8")


def test_cli_exports_a_qat_model_for_tflm_without_data(qat_cnn, tmp_path):
    path = tmp_path / "qat.keras"
    qat_cnn.save(path)
    out = tmp_path / "m.tflite"
    result = CliRunner().invoke(main, ["export", str(path), "-o", str(out), "--target", "tflm",
                                       "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["runtime"] == "TFLite Micro" and info["micro"]["arena_bytes"] > 0
    assert (tmp_path / "m.h").is_file() and (tmp_path / "m_ops.h").is_file()
    result = CliRunner().invoke(main, ["bench", str(out), "--target", "tflm", "--runs", "3"])
    assert result.exit_code == 0 and "TFLite Micro" in result.stdout


def test_a_fixed_batch_of_one_survives_qat_and_export(mnist, tmp_path):
    inputs = keras.Input(batch_shape=(1, 28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    q = quantize_aware(model)
    assert tuple(q.inputs[0].shape) == (1, 28, 28, 1)
    report = to_tflite(model, tmp_path / "m.tflite", "int8", mnist)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(report.op_counts)
    detail = _tflite.interpreter(report.path).get_input_details()[0]
    assert list(detail["shape_signature"]) == [1, 28, 28, 1]


def _tflm_methods() -> list[tuple[str, str]]:
    path = os.path.join(os.path.dirname(__file__), "tflm_resolver_methods.txt")
    with open(path) as f:
        return [tuple(line.split()) for line in f if line.strip() and not line.startswith("#")]


def test_every_op_gets_tflite_micros_own_resolver_method():
    from tfcompress.export._micro import resolver_method

    pairs = _tflm_methods()
    assert len(pairs) >= 100
    wrong = [(op, method, resolver_method(op)) for op, method in pairs
             if resolver_method(op) != method]
    assert wrong == []


def test_the_c_files_never_replace_a_file_tfcompress_did_not_write(qat_cnn, mnist, tmp_path):
    firmware = tmp_path / "fw"
    firmware.mkdir()
    (firmware / "model.h").write_text("// the board's own header\n")
    before = sorted(os.listdir(firmware))
    with pytest.raises(ValueError, match="model.h exists and was not written by tfcompress"):
        to_tflite(qat_cnn, firmware / "model.tflite", "int8", target="tflm")
    assert sorted(os.listdir(firmware)) == before
    assert (firmware / "model.h").read_text() == "// the board's own header\n"
    for name in ("m.cc", "m.h", "m_ops.h"):  # the model itself would become C source
        with pytest.raises(ValueError, match="named like one of the C\\+\\+ files"):
            to_tflite(qat_cnn, firmware / name, "int8", target="tflm")
    (firmware / "d.h").mkdir()
    with pytest.raises(ValueError, match="d.h is in the way"):
        to_tflite(qat_cnn, firmware / "d.tflite", "int8", target="tflm")
    assert sorted(os.listdir(firmware)) == sorted(before + ["d.h"])
    again = to_tflite(qat_cnn, tmp_path / "ours.tflite", "int8", target="tflm")
    again = to_tflite(qat_cnn, tmp_path / "ours.tflite", "int8", target="tflm")  # ours: replaced
    assert all(os.path.exists(f) for f in again.micro.files)


def test_a_set_of_files_is_written_whole_or_not_at_all(tmp_path):
    from tfcompress import _io

    (tmp_path / "a.bin").write_bytes(b"old")
    (tmp_path / "b.bin").mkdir()  # moving the second file into place fails
    with pytest.raises(OSError):
        _io.write_all_atomic({str(tmp_path / "a.bin"): b"new", str(tmp_path / "b.bin"): b"x",
                              str(tmp_path / "c.bin"): b"y"})
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin"]
    _io.write_all_atomic({str(tmp_path / "a.bin"): b"new", str(tmp_path / "c.bin"): b"y"})
    assert (tmp_path / "a.bin").read_bytes() == b"new" and (tmp_path / "c.bin").exists()


def test_a_set_is_written_whole_where_the_filesystem_has_no_hard_links(tmp_path, monkeypatch):
    from tfcompress import _io

    def no_links(*args, **kwargs):
        raise OSError("no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.bin").write_bytes(b"old")
    (tmp_path / "b.bin").mkdir()
    with pytest.raises(OSError):
        _io.write_all_atomic({str(tmp_path / "a.bin"): b"new", str(tmp_path / "b.bin"): b"x"})
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin"]
