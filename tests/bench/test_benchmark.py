import json

import numpy as np
import pytest

from tests.conftest import litert_predict
from tfcompress import bench
from tfcompress.export import to_tflite


@pytest.fixture(scope="module")
def exported(trained_cnn, mnist, tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    return {
        "float32": to_tflite(trained_cnn, d / "f32.tflite", "float32").path,
        "int8": to_tflite(trained_cnn, d / "int8.tflite", "int8", representative_data=mnist).path,
        "int8io": to_tflite(trained_cnn, d / "int8io.tflite", "int8", representative_data=mnist,
                            integer_io=True).path,
    }


@pytest.mark.parametrize("which", ["float32", "int8", "int8io"])
def test_accuracy_equals_an_independent_litert_loop(which, exported, mnist):
    report = bench.benchmark(exported[which], mnist, runs=5)
    independent = np.mean(litert_predict(exported[which], mnist.x_test).argmax(1) == mnist.y_test)
    assert report.accuracy == pytest.approx(independent, abs=0)
    assert report.num_samples == 1000
    assert report.accuracy > 0.9


def test_report_fields(exported, mnist):
    report = bench.benchmark(exported["int8"], mnist, runs=20, warmup=2)
    d = report.to_dict()
    for key in ("size_bytes", "gzip_bytes", "latency_ms_p50", "latency_ms_p90",
                "latency_ms_mean", "accuracy", "fully_int8", "op_dtypes"):
        assert key in d
    assert 0 < d["gzip_bytes"] < d["size_bytes"]
    assert 0 < d["latency_ms_p50"] <= d["latency_ms_p90"]
    assert d["fully_int8"] is True
    assert d["op_dtypes"]["CONV_2D"] == ["int32", "int8"]
    assert bench.benchmark(exported["float32"], runs=3).fully_int8 is False


def test_without_data_times_random_input(exported):
    report = bench.benchmark(exported["float32"], runs=3)
    assert report.accuracy is None and report.latency_ms_p50 > 0


def test_compare_table_and_json(exported, mnist):
    reports = [bench.benchmark(exported[k], mnist, runs=5, max_samples=100)
               for k in ("float32", "int8")]
    table = bench.compare(reports)
    assert "f32.tflite" in table and "int8.tflite" in table and "x smaller" in table
    rows = json.loads(bench.to_json(reports))
    assert [r["fully_int8"] for r in rows] == [False, True]
    ratio = reports[0].size_bytes / reports[1].size_bytes
    assert f"{ratio:.2f}" in table


def test_time_side_by_side_times_every_model_in_turns(exported, mnist):
    paths = [exported[k] for k in ("float32", "int8", "int8io")]
    times = bench.time_side_by_side(paths, mnist, runs=7, warmup=1, rounds=3)
    assert [t.shape for t in times] == [(7,)] * 3  # 7 runs split into turns of 3, 2, 2
    assert all((t > 0).all() for t in times)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        bench.time_side_by_side(paths, rounds=0)
    with pytest.raises(ValueError, match="at least one"):
        bench.time_side_by_side([])
    with pytest.raises(ValueError, match="expects inputs of shape"):
        bench.time_side_by_side(paths, np.zeros((1, 32, 32, 3), np.float32))


def test_inspect_reports_quantization(exported):
    info = bench.inspect_model(exported["int8io"])
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["scale"] > 0
    assert info["fully_int8"] and info["float_ops"] == []
    assert info["op_counts"]["CONV_2D"] == 3


def test_bad_inputs(exported, tmp_path):
    with pytest.raises(ValueError, match="No .tflite file"):
        bench.benchmark(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a valid .tflite"):
        bench.benchmark(junk)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        bench.benchmark(exported["float32"], np.zeros((4, 32, 32, 3), np.float32), runs=1)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        bench.benchmark(exported["float32"], runs=0)
