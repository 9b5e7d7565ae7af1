import json

from tfcompress.cli import main


def test_debug_writes_the_table_json_and_plot(runner, trained_cnn_path, int8_path, tmp_path):
    out = tmp_path / "dbg"
    result = runner.invoke(main, ["debug", str(trained_cnn_path), str(int8_path), "--data",
                                  "mnist", "--samples", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "layers adding the most error" in result.output and "relu1" in result.output
    data = json.loads((out / "layer_errors.json").read_text())
    assert data["samples"] == 8 and data["unmatched_layers"] == []
    assert (out / "layer_errors.png").exists()


def test_debug_refuses_a_file_from_another_model(runner, trained_cnn_path, tmp_path):
    import tfcompress as tfc

    other = tmp_path / "other.tflite"
    tfc.export.to_tflite(tfc.reference.reference_cnn(width=0.5), other, "int8",
                         representative_data="mnist")
    result = runner.invoke(main, ["debug", str(trained_cnn_path), str(other), "--data",
                                  "mnist", "--samples", "4", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "does not look made from" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


def test_sensitivity_scan_and_its_cache(runner, trained_cnn_path, tmp_path):
    out = tmp_path / "scan"
    args = ["sensitivity", str(trained_cnn_path), "--data", "mnist", "--samples", "100",
            "--target", "0.8", "--out", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "per-layer values for an overall 0.8" in result.output
    scan = json.loads((out / "sensitivity_prune.json").read_text())
    assert {s["layer"] for s in scan["layers"]} >= {"conv1", "fc1"}
    assert (out / "sensitivity_prune.png").exists()
    bad = runner.invoke(main, ["sensitivity", str(trained_cnn_path), "--data", "mnist",
                               "--technique", "quantize", "--target", "0.5"])
    assert bad.exit_code == 2 and "--target" in bad.output


def test_export_keeps_named_layers_in_float(runner, trained_cnn_path, tmp_path):
    out = tmp_path / "mixed.tflite"
    result = runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(out), "--data",
                                  "mnist", "--float-layer", "fc1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert not report["integer_only"]
    assert [o["layer"] for o in report["float_ops"]] == ["fc1"]
    auto = runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(tmp_path / "a.tflite"),
                                "--data", "mnist", "--float-layer", "auto"])
    assert auto.exit_code == 0, auto.output
    assert "kept in float: none" in auto.output  # a healthy model is within 1 point in int8
