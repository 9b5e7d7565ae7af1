import json

import numpy as np
import pytest

from tfcompress.cli import main

COMMANDS = ["demo", "export", "bench", "inspect", "prune", "qat", "distill", "factorize",
            "compress", "debug", "sensitivity", "recipes"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(runner, command):
    result = runner.invoke(main, ([command] if command else []) + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if command is None:
        for c in COMMANDS:
            assert c in result.output


def test_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, tfcompress.cli; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_export_int8(int8_path):
    assert int8_path.is_file() and int8_path.stat().st_size > 0


def test_export_float16_text_report(runner, trained_cnn_path, tmp_path):
    out = tmp_path / "f16.tflite"
    result = runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(out),
                                  "--quantize", "float16"])
    assert result.exit_code == 0, result.output
    assert "float16" in result.output and out.is_file()


def test_bench_two_models_json_and_table(runner, trained_cnn_path, int8_path, tmp_path):
    f32 = tmp_path / "f32.tflite"
    assert runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(f32),
                                "--quantize", "float32"]).exit_code == 0
    result = runner.invoke(main, ["bench", str(f32), str(int8_path), "--data", "mnist",
                                  "--runs", "5", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["fully_int8"] for r in rows] == [False, True]
    assert all(r["accuracy"] > 0.9 for r in rows)
    table = runner.invoke(main, ["bench", str(f32), str(int8_path), "--runs", "3"])
    assert table.exit_code == 0 and "m_int8.tflite" in table.stdout


def test_inspect(runner, int8_path):
    result = runner.invoke(main, ["inspect", str(int8_path)])
    assert result.exit_code == 0, result.output
    assert "CONV_2D" in result.output and "fully int8: yes" in result.output
    as_json = json.loads(runner.invoke(main, ["inspect", str(int8_path), "--json"]).stdout)
    assert as_json["fully_int8"] is True


def test_prune_command(runner, trained_cnn_path, tmp_path):
    out = tmp_path / "pruned.keras"
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist",
                                  "--sparsity", "0.5", "--epochs", "1", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["sparsity_after"] == pytest.approx(0.5, abs=0.01)
    assert info["accuracy_after"] > 0.85
    assert out.is_file()


def test_prune_and_qat_commands_train_on_two_devices(runner, trained_cnn_path, tmp_path,
                                                      mirrored):
    out = tmp_path / "pruned.keras"
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist",
                                  "--sparsity", "0.5", "--epochs", "1", "-o", str(out),
                                  "--distribute", "mirrored", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["sparsity_after"] == pytest.approx(0.5, abs=0.01)
    assert info["accuracy_after"] > 0.85
    result = runner.invoke(main, ["qat", str(out), "--data", "mnist", "-o",
                                  str(tmp_path / "q.tflite"), "--distribute", "mirrored"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist", "-o",
                                  str(out), "--distribute", "tpu"])
    assert result.exit_code == 2 and "'tpu' is not 'mirrored'" in result.output


def test_prune_channel_shrink_command(runner, trained_cnn_path, tmp_path):
    out = tmp_path / "small.keras"
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist",
                                  "--granularity", "channel", "--shrink", "--epochs", "1",
                                  "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["shrink"]["param_ratio"] < 0.35
    assert info["accuracy_after"] > 0.85
    import keras

    small = keras.saving.load_model(out)
    assert small.get_layer("conv4").filters == 32 and small.count_params() == info["shrink"][
        "params_after"]
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist", "--shrink",
                                  "-o", str(out)])
    _one_line_error(result, "granularity='channel'")


def test_qat_command(runner, trained_cnn_path, tmp_path):
    out = tmp_path / "qat.tflite"
    keras_out = tmp_path / "qat.keras"
    result = runner.invoke(main, ["qat", str(trained_cnn_path), "--data", "mnist", "-o", str(out),
                                  "--keras-output", str(keras_out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["integer_only"] is True
    assert info["accuracy_int8_litert"] >= info["accuracy_float"] - 0.01
    assert out.is_file() and keras_out.is_file()


def test_qat_keeps_an_unknown_layer_float_and_says_so(runner, tmp_path):
    import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    path = tmp_path / "ln.keras"
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(path)
    result = runner.invoke(main, ["qat", str(path), "--data", "mnist", "-o",
                                  str(tmp_path / "q.tflite"), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: quantize_aware keeps layer 'ln' (LayerNormalization) in float" in \
        result.stderr
    info = json.loads(result.stdout)
    assert info["integer_only"] is False and (tmp_path / "q.tflite").is_file()


def _one_line_error(result, *needles):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_missing_model(runner, tmp_path):
    result = runner.invoke(main, ["export", str(tmp_path / "nope.keras"), "-o", "x.tflite"])
    _one_line_error(result, "does not exist")


def test_corrupt_model(runner, tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"garbage")
    result = runner.invoke(main, ["export", str(bad), "-o", str(tmp_path / "o.tflite"),
                                  "--quantize", "float32"])
    _one_line_error(result, "corrupt")
    assert not (tmp_path / "o.tflite").exists()


def test_int8_needs_data(runner, trained_cnn_path, tmp_path):
    result = runner.invoke(main, ["export", str(trained_cnn_path), "-o",
                                  str(tmp_path / "o.tflite")])
    _one_line_error(result, "--data")


def test_distill_command(runner, trained_cnn_path, tmp_path):
    import keras

    from tfcompress.reference import reference_cnn

    keras.utils.set_random_seed(0)  # one epoch from scratch: the outcome depends on the start
    student = tmp_path / "student.keras"
    reference_cnn(width=0.5).save(student)
    out = tmp_path / "distilled.keras"
    result = runner.invoke(main, ["distill", "--teacher", str(trained_cnn_path), "--student",
                                  str(student), "--data", "mnist", "--epochs", "1", "-o", str(out),
                                  "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["param_ratio"] < 0.26 and info["student_accuracy"] > 0.8
    assert out.is_file()
    result = runner.invoke(main, ["distill", "--teacher", str(trained_cnn_path), "--student",
                                  str(student), "--data", "shapes", "-o", str(out)])
    _one_line_error(result, "expects images of shape (28, 28, 1)")


def test_distill_command_makes_the_student_from_the_teacher(runner, trained_cnn_path, tmp_path):
    import keras

    out = tmp_path / "made.keras"
    teacher = [str(trained_cnn_path)]
    result = runner.invoke(main, ["distill", "--teacher", *teacher, "--channels", "0.5",
                                  "--fold-pooling", "--data", "mnist", "--epochs", "1",
                                  "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["param_ratio"] < 0.3 and info["student_accuracy"] > 0.8
    assert keras.saving.load_model(out).get_layer("conv1").strides == (2, 2)
    result = runner.invoke(main, ["distill", "--teacher", *teacher, "--data", "mnist",
                                  "-o", str(out)])
    _one_line_error(result, "No student: pass --student")
    result = runner.invoke(main, ["distill", "--teacher", *teacher, "--student", *teacher,
                                  "--channels", "0.5", "--data", "mnist", "-o", str(out)])
    _one_line_error(result, "not both")
    result = runner.invoke(main, ["distill", "--teacher", *teacher, "--channels", "1",
                                  "--data", "mnist", "-o", str(out)])
    _one_line_error(result, "--channels")


def test_factorize_command(runner, trained_cnn_path, tmp_path):
    out = tmp_path / "factorized.keras"
    result = runner.invoke(main, ["factorize", str(trained_cnn_path), "--rank-ratio", "0.25",
                                  "--rank", "conv4=8", "--data", "mnist", "--epochs", "1",
                                  "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["param_ratio"] <= 0.6
    assert {r["name"]: r["rank"] for r in info["layers"]}["conv4"] == 8
    assert info["accuracy_after"] >= info["accuracy_before"] - 0.02
    assert out.is_file()
    result = runner.invoke(main, ["factorize", str(trained_cnn_path), "-o", str(out)])
    _one_line_error(result, "energy=0.9")
    result = runner.invoke(main, ["factorize", str(trained_cnn_path), "--rank", "fc1",
                                  "-o", str(out)])
    _one_line_error(result, "LAYER=R")


def test_never_overwrites_input(runner, trained_cnn_path):
    before = trained_cnn_path.read_bytes()
    result = runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(trained_cnn_path),
                                  "--quantize", "float32"])
    _one_line_error(result, "never overwrites")
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist", "-o",
                                  str(trained_cnn_path)])
    _one_line_error(result, "never overwrites")
    assert trained_cnn_path.read_bytes() == before


def test_wrong_data_shape(runner, trained_cnn_path, tmp_path):
    data = tmp_path / "rgb.npz"
    np.savez(data, x=np.zeros((20, 32, 32, 3), np.float32), y=np.zeros(20, np.int64))
    result = runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(tmp_path / "o.tflite"),
                                  "--data", str(data)])
    _one_line_error(result, "expects images of shape (28, 28, 1)")


def test_bench_bad_data_and_bad_file(runner, int8_path, tmp_path):
    _one_line_error(runner.invoke(main, ["bench", str(int8_path), "--data", "nosuchset"]),
                    "neither a built-in name")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 32)
    _one_line_error(runner.invoke(main, ["bench", str(junk)]), "not a valid .tflite")


def test_prune_bad_granularity(runner, trained_cnn_path, tmp_path):
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist",
                                  "--granularity", "3:2", "-o", str(tmp_path / "p.keras")])
    _one_line_error(result, "0 < N < M")


def test_compress_command(runner, trained_cnn_path, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - prune: {granularity: channel, sparsity: 0.5, round_to: 8, "
                      "epochs: 1}\n  - export: {mode: int8}\n")
    out = tmp_path / "out"
    args = ["compress", str(trained_cnn_path), "--data", "mnist", "--recipe", str(recipe),
            "-o", str(out), "--runs", "5", "--max-accuracy-drop", "3"]
    result = runner.invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["meets_budget"] is True and info["ratios"]["smaller"] > 4
    assert (out / "report.png").is_file()
    # running it again resumes: nothing left to do, same numbers
    again = runner.invoke(main, args + ["--json"])
    assert json.loads(again.stdout)["final"]["accuracy"] == info["final"]["accuracy"]
    assert "all 2 steps were completed earlier" in again.stderr
    bad = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist", "--recipe",
                               "nope", "-o", str(out)])
    _one_line_error(bad, "neither a built-in name")


@pytest.mark.slow
def test_demo_end_to_end(runner, tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(main, ["demo", "--out", str(out), "--epochs", "2", "--recipe", "quick",
                                  "--runs", "10", "--max-accuracy-drop", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["prune", "qat", "export"]
    assert report["ratios"]["smaller"] >= 4 and report["ratios"]["smaller_gzip"] >= 4
    assert report["meets_budget"] is True
    for name in ("trained.keras", "00_baseline_float32.tflite", "03_export_int8.tflite",
                 "report.md", "report.png"):
        assert (out / name).is_file(), name
    assert "03_export_int8.tflite" in result.stdout


@pytest.mark.slow
def test_demo_of_a_detector_is_judged_by_map(runner, tmp_path):
    from tests.detection.test_data import write_yolo
    from tfcompress.data import SHAPE_CLASSES, make_shapes_detect

    x, y = make_shapes_detect(400, image_size=96, seed=4)  # a small YOLO folder: a short test
    folder = write_yolo(tmp_path / "boxes", x, y, SHAPE_CLASSES)
    out = tmp_path / "demo"
    result = runner.invoke(main, ["demo", "--task", "detection", "--data", str(folder),
                                  "--out", str(out), "--epochs", "3", "--recipe", "quick",
                                  "--runs", "5", "--max-accuracy-drop", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == "boxes" and report["metric"]["name"] == "map50"
    assert [s["step"] for s in report["steps"]] == ["prune", "qat", "export"]
    prune = report["steps"][0]
    assert prune["params"] < 0.7 * report["baseline"]["params"]  # channels went, heads kept
    # int8 weights and fewer channels; per-channel scales and zero points (12 bytes a channel
    # in the file) weigh much in a model this narrow
    assert report["ratios"]["smaller"] >= 2
    assert "map50" in result.stdout


def test_recipes_lists_shows_and_explains_every_setting(runner, tmp_path):
    import yaml

    from tfcompress.pipeline import BUILTIN, load_recipe
    from tfcompress.pipeline._recipe import RULES

    listed = runner.invoke(main, ["recipes"])
    assert listed.exit_code == 0 and all(f"{name}:" in listed.output for name in BUILTIN)
    shown = runner.invoke(main, ["recipes", "show", "default"])
    assert yaml.safe_load(shown.output) == BUILTIN["default"]
    (tmp_path / "mine.yaml").write_text(shown.output)  # what a user saves and edits
    assert load_recipe(str(tmp_path / "mine.yaml")).to_dict() == load_recipe("default").to_dict()
    keys = runner.invoke(main, ["recipes", "keys", "--json"])
    rows = json.loads(keys.output)
    assert {(r["step"], r["setting"]) for r in rows} == {
        (k, key) for k, rules in RULES.items() for key in rules}
    bad = runner.invoke(main, ["recipes", "show", "nope"])
    assert bad.exit_code == 1 and "the built-in ones are" in bad.output
