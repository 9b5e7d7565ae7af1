"""Arm Ethos-U targets: the int8 file compiled by Arm's Vela, where every op runs, Vela's own
figures, the compiled model's C++ files, and every refusal writing nothing."""

import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import pytest
from click.testing import CliRunner

from tfcompress import _vela
from tfcompress.cli import main
from tfcompress.export import to_tflite

pytestmark = pytest.mark.skipif(not _vela.installed(), reason="needs the npu extra")


@pytest.fixture(scope="module")
def npu(trained_cnn, mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("npu") / "cnn.tflite"
    return to_tflite(trained_cnn, path, "int8", mnist, target="ethos-u55-128",
                     class_names=mnist.class_names)


def _vela_itself(path, out, *args):
    """Runs the `vela` command on `path`; its printed summary and its CSV row."""
    run = subprocess.run([sys.executable, "-m", "ethosu.vela", str(path), "--output-dir",
                          str(out), *args], capture_output=True, text=True, check=True)
    (summary,) = glob.glob(os.path.join(out, "*_summary_*.csv"))
    with open(summary, newline="") as f:
        return run.stdout, next(csv.DictReader(f))


def _printed(stdout, label):
    return float(re.search(rf"^{label}\s+([\d.]+)", stdout, re.M).group(1))


def test_every_op_of_the_reference_cnn_runs_on_the_npu_and_the_files_are_written(npu):
    report = npu.npu
    assert npu.integer_only and npu.inputs[0].shape == (1, 28, 28, 1)
    assert npu.inputs[0].dtype == "int8" and npu.agreement >= 0.99  # reference kernels first
    assert report.cpu_ops == () and report.npu_share == 1.0
    assert len(report.ops) == sum(npu.op_counts.values())
    assert {o.layer for o in report.ops} >= {"relu1", "pool1", "conv4", "fc1"}
    assert report.compiled_ops == ("ethos-u",)
    base = os.path.splitext(npu.path)[0]
    assert set(report.files) == {f"{base}_vela.tflite", f"{base}.h", f"{base}.cc",
                                 f"{base}_ops.h"}
    with open(f"{base}_vela.tflite", "rb") as f:
        assert f.read() == report.compiled and len(report.compiled) == report.model_bytes
    ops_h = open(f"{base}_ops.h").read()
    assert "resolver.AddEthosU()" in ops_h and "MicroMutableOpResolver<1>" in ops_h
    header = open(f"{base}.h").read()
    assert f"kCnnArenaSize = {report.arena_bytes};" in header
    assert report.arena_bytes > report.arena_bytes_planned >= report.sram_bytes > 0
    assert f"({report.model_bytes} bytes of flash)" in header
    info = json.loads(json.dumps(npu.to_dict()))
    assert info["npu"]["npu_ops"] == len(report.ops) and info["npu"]["cpu_ops"] == 0
    assert "compiled" not in info["npu"]


def test_the_c_sources_of_the_compiled_model_compile(npu, tmp_path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    cc = os.path.splitext(npu.path)[0] + ".cc"
    out = subprocess.run([compiler, "-std=c++17", "-Wall", "-Werror", "-c", cc, "-o",
                          str(tmp_path / "m.o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("accelerator, args", [
    ("ethos-u55-128", []),
    ("ethos-u85-256", []),
    ("ethos-u65-256", ["--system-config", "Ethos_U65_High_End", "--memory-mode",
                       "Dedicated_Sram_512KB"]),
])
def test_the_figures_are_those_vela_itself_prints(npu, accelerator, args, tmp_path):
    from tfcompress.bench import estimate_npu

    options = dict(zip(("system_config", "memory_mode"), args[1::2], strict=False))
    mine = estimate_npu(npu.path, accelerator, **options).npu
    stdout, row = _vela_itself(npu.path, tmp_path, "--accelerator-config", accelerator, *args)
    assert mine.system_config == row["system_config"] == re.search(
        r"^System configuration\s+(\S+)", stdout, re.M).group(1)
    assert mine.memory_mode == re.search(r"^Memory mode\s+(\S+)", stdout, re.M).group(1)
    assert mine.inference_ms == pytest.approx(float(row["inference_time"]) * 1000, rel=1e-12)
    assert mine.cycles == int(row["cycles_total"]) and mine.macs == _printed(
        stdout, "Neural network macs")
    assert mine.sram_bytes / 1024 == pytest.approx(_printed(stdout, "Total SRAM used"), abs=0.005)
    if "Total Off-chip Flash used" in stdout:
        assert mine.flash_bytes / 1024 == pytest.approx(
            _printed(stdout, "Total Off-chip Flash used"), abs=0.005)
    if "Total DRAM used" in stdout:
        assert mine.dram_bytes / 1024 == pytest.approx(_printed(stdout, "Total DRAM used"),
                                                       abs=0.005)
    assert _printed(stdout, "CPU operators =") == 0


def test_ops_left_to_the_cpu_are_refused_with_their_layer_and_reason_unless_allowed(
        trained_cnn, mnist, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"2 of \d+ ops would run on the CPU: QUANTIZE .*"
                                         r"unsupported DataType Float32.*allow_cpu_ops"):
        to_tflite(trained_cnn, path, "int8", mnist, target="ethos-u55-128", integer_io=False)
    assert list(tmp_path.iterdir()) == []
    report = to_tflite(trained_cnn, path, "int8", mnist, target="ethos-u55-128",
                       integer_io=False, allow_cpu_ops=True).npu
    assert [o.op for o in report.cpu_ops] == ["QUANTIZE", "DEQUANTIZE"]
    assert all(o.reason for o in report.cpu_ops) and 0 < report.npu_share < 1
    ops_h = (tmp_path / "m_ops.h").read_text()
    assert all(f"resolver.{m}()" in ops_h for m in ("AddEthosU", "AddQuantize", "AddDequantize"))


@pytest.mark.parametrize("budget, words", [
    ({"max_latency_ms": 0.001}, r"estimated [\d.]+ ms per inference, over max_latency_ms"),
    ({"max_sram": 64}, r"bytes of SRAM, over max_sram 64"),
    ({"max_flash": 1024}, r"bytes of flash \(the compiled model\), over max_flash 1,024"),
])
def test_budgets_refuse_a_model_over_them_and_write_nothing(trained_cnn, mnist, budget, words,
                                                            tmp_path):
    with pytest.raises(ValueError, match=words + r".*Nothing was written"):
        to_tflite(trained_cnn, tmp_path / "m.tflite", "int8", mnist, target="ethos-u55-128",
                  **budget)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, words", [
    ({"target": "ethos-u55-100"}, r"no accelerator configuration 'ethos-u55-100'; it has: "
                                  r"ethos-u55-32, .*ethos-u85-2048"),
    ({"system_config": "Nope"}, r"no system configuration 'Nope'; it has: .*Ethos_U55_"),
    ({"memory_mode": "Nope"}, r"no memory mode 'Nope'; it has: .*Shared_Sram"),
    ({"quantization": "float16"}, r"runs integer models; 'float16' would run on its CPU"),
    ({"target": "litert", "max_sram": 1000}, r"max_sram applies to the Ethos-U targets, not "
                                              r"'litert'"),
    ({"target": "tflm", "max_latency_ms": 1.0}, r"max_latency_ms applies to the Ethos-U targets"),
])
def test_bad_npu_settings_get_one_line_before_any_work(trained_cnn_path, kwargs, words,
                                                       tmp_path):
    kwargs = {"target": "ethos-u55-128", "quantization": "int8", **kwargs}
    with pytest.raises(ValueError, match=words):
        to_tflite(trained_cnn_path, tmp_path / "m.tflite", representative_data="mnist",
                  **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_without_vela_one_line_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("ethosu") else real(name, *a))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"needs the ethosu package.*tfcompress\[npu\]"):
        to_tflite(model, tmp_path / "m.tflite", "int8", target="ethos-u55-128")
    result = CliRunner().invoke(main, ["bench", "x.tflite", "--target", "ethos-u55-128"])
    assert result.exit_code == 2 and "tfcompress[npu]" in result.output


def test_cli_exports_for_an_npu_and_benches_files_side_by_side(trained_cnn_path, npu, tmp_path):
    out = tmp_path / "m.tflite"
    result = CliRunner().invoke(main, [
        "export", str(trained_cnn_path), "-o", str(out), "--data", "mnist", "--target",
        "ethos-u85-256", "--max-latency-ms", "10", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["npu"]["accelerator"] == "ethos-u85-256" and info["npu"]["cpu_ops"] == 0
    assert (tmp_path / "m_vela.tflite").is_file() and (tmp_path / "m_ops.h").is_file()
    result = CliRunner().invoke(main, ["bench", npu.path, str(out), "--target",
                                       "ethos-u85-256", "--data", "mnist", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["npu"]["accelerator"] for r in rows] == ["ethos-u85-256"] * 2
    assert rows[0]["accuracy"] > 0.85 and rows[0]["npu"]["inference_ms"] > 0
    result = CliRunner().invoke(main, ["bench", npu.path, "--target", "ethos-u55-128"])
    assert result.exit_code == 0 and "est. ms" in result.stdout and "10/10" in result.stdout
    result = CliRunner().invoke(main, ["export", str(trained_cnn_path), "-o",
                                       str(tmp_path / "t.tflite"), "--data", "mnist",
                                       "--target", "ethos-u55-32"])
    assert result.exit_code == 0, result.output
    assert "| # | op | layer | runs on |" in result.stdout and "| conv4 | NPU |" in result.stdout
    result = CliRunner().invoke(main, ["bench", npu.path, "--target", "ethos-u55-128",
                                       "--runs", "5"])
    assert result.exit_code == 2 and "Vela's estimates" in result.output
    result = CliRunner().invoke(main, ["export", str(trained_cnn_path), "-o", str(tmp_path / "x"
                                       ".tflite"), "--data", "mnist", "--max-sram", "9"])
    assert result.exit_code == 1 and "max_sram applies to the Ethos-U targets" in result.output
    assert "Traceback" not in result.output


def _with_sqrt():
    """A small CNN with one layer Vela leaves to the CPU (SQRT has no NPU kernel)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.sqrt(keras.ops.abs(t)), output_shape=lambda s: s,
                            name="root")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_quantize_aware_names_the_layers_that_will_not_map_to_the_npu_before_training():
    from tfcompress.quantization import quantize_aware

    with pytest.warns(UserWarning, match=r"ethos-u55-128.*1 of \d+ ops of this model would not "
                                         r"run on the NPU but on the CPU: root \(SQRT: "
                                         r"Unsupported opType\)"):
        quantize_aware(_with_sqrt(), target="ethos-u55-128")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing to say: every op maps
        quantize_aware(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                         keras.layers.Flatten(), keras.layers.Dense(2)]),
                       target="ethos-u55-128")
    with pytest.raises(ValueError, match="no accelerator configuration 'ethos-u55-7'"):
        quantize_aware(_with_sqrt(), target="ethos-u55-7")


def test_qat_cli_warns_before_training_and_compiles_for_the_npu(trained_cnn_path, tmp_path):
    out = tmp_path / "q.tflite"
    result = CliRunner().invoke(main, ["qat", str(trained_cnn_path), "--data", "mnist", "-o",
                                       str(out), "--epochs", "1", "--target", "ethos-u55-64",
                                       "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["npu"]["accelerator"] == "ethos-u55-64" and info["npu"]["cpu_ops"] == 0
    assert info["accuracy_int8_litert"] > 0.85 and (tmp_path / "q_vela.tflite").is_file()
    result = CliRunner().invoke(main, ["qat", str(trained_cnn_path), "--data", "mnist", "-o",
                                       str(tmp_path / "r.tflite"), "--allow-cpu-ops"])
    assert result.exit_code == 2 and "goes with an Ethos-U --target" in result.output


def test_compress_refuses_npu_settings_for_another_target_before_any_work(trained_cnn_path,
                                                                          tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist",
                                       "-o", str(out), "--target", "tflm", "--max-sram", "5"])
    assert result.exit_code == 1 and "max_sram does not go with target: tflm" in result.output
    result = CliRunner().invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist",
                                       "-o", str(out), "--target", "ethos-u55-128",
                                       "--system-config", "Nope"])
    assert result.exit_code == 1 and "no system configuration 'Nope'" in result.output
    assert not out.exists()
