import json
import os

import keras
import numpy as np
import pytest

from tfcompress.bench import benchmark
from tfcompress.data import Dataset
from tfcompress.pipeline import _data, _steps, compress

QUICK = {"name": "test", "steps": [
    {"prune": {"granularity": "channel", "sparsity": 0.5, "round_to": 8, "epochs": 1}},
    {"qat": {"epochs": 1}},
    {"export": {"mode": "int8"}},
]}


@pytest.fixture(scope="module")
def small(mnist):
    return Dataset(mnist.x_train[:1500], mnist.y_train[:1500], mnist.x_test[:300],
                   mnist.y_test[:300], name="mnist-small")


def test_pipeline_writes_models_reports_and_meets_a_budget(trained_cnn, small, tmp_path):
    result = compress(trained_cnn, small, QUICK, tmp_path, runs=5, max_accuracy_drop=5.0)
    assert [r.step for r in result.steps] == ["prune", "qat", "export"]
    base, final = result.baseline, result.final
    assert final.params < 0.35 * base.params
    assert final.size_bytes * 4 <= base.size_bytes
    assert abs(final.delta) <= 5.0 and result.meets_budget
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["final"]["tflite_path"].endswith("03_export_int8.tflite")
    assert report["ratios"]["smaller"] >= 4
    pair = report["side_by_side"]  # the headline speed-up comes from the two files in turns
    assert pair["runs"] == 10 and report["ratios"]["faster_p50"] == round(
        pair["baseline_ms_p50"] / pair["final_ms_p50"], 2)
    md = (tmp_path / "report.md").read_text()
    assert md.count("\n| ") == 5  # header + baseline + 3 steps
    assert "timed side by side" in md
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("00_baseline.keras", "01_prune.keras", "02_qat_int8.tflite",
                 "03_export_int8.tflite", "state.json"):
        assert (tmp_path / name).is_file(), name


def test_interrupted_run_resumes_after_the_last_completed_step(trained_cnn, small, tmp_path,
                                                               monkeypatch):
    real = _steps.run

    def interrupted(step, *args, **kwargs):
        if step.kind == "qat":
            raise KeyboardInterrupt
        return real(step, *args, **kwargs)

    monkeypatch.setattr(_steps, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compress(trained_cnn, small, QUICK, tmp_path, runs=5)
    state = json.loads((tmp_path / "state.json").read_text())
    assert [r["step"] for r in state["completed"]] == ["prune"]
    stamp = os.path.getmtime(tmp_path / "01_prune.keras")
    first = state["completed"][0]

    calls = []
    monkeypatch.setattr(_steps, "run", lambda step, *a, **k: calls.append(step.kind) or real(
        step, *a, **k))
    result = compress(trained_cnn, small, QUICK, tmp_path, runs=5)
    assert calls == ["qat"]  # the completed prune step is not run again
    assert os.path.getmtime(tmp_path / "01_prune.keras") == stamp
    assert result.steps[0].accuracy == first["accuracy"]
    assert [r.step for r in result.steps] == ["prune", "qat", "export"]
    with pytest.raises(ValueError, match="different recipe"):
        compress(trained_cnn, small, "quick", tmp_path, runs=5)


def test_same_seed_same_numbers_and_search_uses_validation(trained_cnn, small, tmp_path):
    recipe = {"steps": [{"prune": {"granularity": "channel", "round_to": 8, "epochs": 1},
                         "search": {"values": [0.75, 0.25], "objective": "size"}}]}
    a = compress(trained_cnn, small, recipe, tmp_path / "a", runs=3, max_accuracy_drop=2.0)
    b = compress(trained_cnn, small, recipe, tmp_path / "b", runs=3, max_accuracy_drop=2.0)
    for x, y in zip(a.steps, b.steps, strict=True):
        assert (x.accuracy, x.params, x.size_bytes) == (y.accuracy, y.params, y.size_bytes)
    search = a.steps[0].search
    assert [row["sparsity"] for row in search] == [0.75, 0.25]
    # 75 % of channels gives the smaller file but breaks the budget (about 68 % against 95 %
    # on validation after one epoch); 25 % stays within it, so the larger file is chosen.
    refused, kept = search
    assert refused["size"] < kept["size"]
    assert not refused["within_budget"] and not refused["chosen"]
    assert kept["within_budget"] and kept["chosen"]
    assert refused["val_accuracy"] < kept["val_accuracy"] - 0.1


def test_default_validation_is_the_hold_out_split(small):
    fit, test, _ = _data.splits(small, None, seed=3)
    rest, val = small.hold_out(seed=3)  # the default share is the pipeline's
    explicit, _, _ = _data.splits(rest, val, seed=3)
    for part in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(fit, part), getattr(explicit, part))
    assert test.test is small.test


def test_distill_step_folds_pooling_and_exports_integer_only(trained_cnn, small, tmp_path):
    recipe = {"steps": [{"distill": {"channels": 0.5, "fold_pooling": True, "epochs": 2}},
                        {"qat": {"epochs": 1}}, {"export": {"mode": "int8"}}]}
    result = compress(trained_cnn, small, recipe, tmp_path, runs=3)
    student = keras.saving.load_model(tmp_path / "01_distill.keras")
    assert student.get_layer("conv1").strides == (2, 2)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) and layer.name == "pool1"
                   for layer in student.layers)
    assert result.steps[0].info["student_params"] == result.steps[0].params < 0.3 * (
        result.baseline.params)
    assert result.final.params <= result.steps[0].params  # QAT folds BatchNorm, no extras
    assert result.final.delta > -6.0  # 2 epochs on 1,500 images; the card trains longer
    assert benchmark(result.final.tflite_path).fully_int8


def test_bad_input(trained_cnn, tmp_path):
    with pytest.raises(ValueError, match="expects images of shape"):
        compress(trained_cnn, "shapes", QUICK, tmp_path)


def test_per_layer_prune_steps_use_a_sensitivity_scan(trained_cnn, small, tmp_path):
    recipe = {"steps": [{"prune": {"sparsity": 0.8, "per_layer": True, "epochs": 1}},
                        {"prune": {"granularity": "channel", "sparsity": 0.4, "per_layer": True,
                                   "round_to": 1, "epochs": 1}},
                        {"export": {"mode": "int8"}}]}
    result = compress(trained_cnn, small, recipe, tmp_path, runs=3, max_accuracy_drop=10.0)
    unstructured, channels = result.steps[0].info, result.steps[1].info
    sizes = {s["layer"]: s["weights"] for s in unstructured["sensitivity"]["layers"]}
    chosen = unstructured["layer_sparsity"]
    assert set(chosen) == set(sizes) and len(set(chosen.values())) > 1
    overall = sum(chosen[k] * sizes[k] for k in sizes) / sum(sizes.values())
    assert overall == pytest.approx(0.8, abs=0.005)
    reached = {k.split("/")[0]: v["sparsity"] for k, v in unstructured["layers"].items()}
    for name, value in chosen.items():
        assert reached[name] == pytest.approx(value, abs=0.02), name
    assert channels["sensitivity"]["technique"] == "channels"
    assert result.final.params < result.baseline.params


def test_export_step_keeps_the_layers_a_scan_picks_in_float(trained_cnn, small, tmp_path):
    from tests.export.test_selective import _with_bad_fc1

    recipe = {"steps": [{"export": {"mode": "int8", "float_layers": "auto"}}]}
    result = compress(_with_bad_fc1(trained_cnn), small, recipe, tmp_path, runs=3)
    info = result.steps[0].info
    assert info["float_layers"] == ["fc1", "drop", "logits"]
    assert info["sensitivity"]["technique"] == "quantize"
    assert result.final.delta > -2.0  # the fully int8 file of this model loses > 5 points
    assert not benchmark(result.final.tflite_path).fully_int8


def test_qat_step_with_auto_float_layers(trained_cnn, small, tmp_path):
    from tests.export.test_selective import _with_bad_fc1

    recipe = {"steps": [{"qat": {"epochs": 1, "learning_rate": 1e-5, "float_layers": "auto"}},
                        {"export": {"mode": "int8"}}]}
    result = compress(_with_bad_fc1(trained_cnn), small, recipe, tmp_path, runs=3)
    assert result.steps[0].info["float_layers"] == ["fc1", "drop", "logits"]
    assert result.final.delta > -3.0
    assert not benchmark(result.final.tflite_path).fully_int8


@pytest.mark.slow
def test_a_run_on_two_devices_trains_every_step_there(trained_cnn, small, tmp_path, mirrored):
    result = compress(trained_cnn, small, QUICK, tmp_path, runs=3, max_accuracy_drop=5.0,
                      distribute="mirrored")
    assert "on 2 devices (MirroredStrategy)" in result.data_sources["train"]
    assert "on 2 devices" in (tmp_path / "report.md").read_text()
    assert [r.step for r in result.steps] == ["prune", "qat", "export"]
    assert result.final.accuracy > 0.85 and abs(result.final.delta) <= 5.0
    with pytest.raises(ValueError, match="distribute must be one of"):
        compress(trained_cnn, small, QUICK, tmp_path / "x", distribute="tpu-pod")
    assert not (tmp_path / "x").exists()
