"""Issue 12 on the command line: every mistake is one line on stderr, a non-zero exit and
nothing written; --unsafe is honoured by every command; output is quiet by default."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfcompress.cli import main


def _error_line(result, match):
    """Our progress lines may come first; the error is the last line, with no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and match in lines[-1], result.stderr
    assert "Traceback" not in result.output


def _one_line_error(result, match):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def small_npz(mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x_train=mnist.x_train[:600], y_train=mnist.y_train[:600],
             x_test=mnist.x_test[:200], y_test=mnist.y_test[:200])
    return str(path)


@pytest.fixture(scope="module")
def lambda_model_path(mnist, tmp_path_factory):
    """A trained model with a Lambda layer: it loads only with --unsafe."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: t * 1.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(10, name="fc")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(mnist.x_train[:1000], mnist.y_train[:1000], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    model.save(path)
    return str(path)


@pytest.mark.parametrize("command", ["prune", "factorize", "distill", "compress"])
def test_unsafe_is_honoured_by_every_command_that_trains(runner, command, lambda_model_path,
                                                         small_npz, tmp_path):
    out = str(tmp_path / ("out" if command == "compress" else "out.keras"))
    (tmp_path / "r.yaml").write_text("steps:\n  - prune: {sparsity: 0.5, epochs: 1}\n"
                                     "  - export: {mode: float16}\n")
    args = {
        "prune": ["prune", lambda_model_path, "--data", small_npz, "--sparsity", "0.5",
                  "--epochs", "1", "-o", out],
        "factorize": ["factorize", lambda_model_path, "--rank-ratio", "0.5", "--min-params",
                      "100", "--data", small_npz, "-o", out],
        "distill": ["distill", "--teacher", lambda_model_path, "--student", lambda_model_path,
                    "--data", small_npz, "--epochs", "1", "-o", out],
        "compress": ["compress", lambda_model_path, "--data", small_npz, "--recipe",
                     str(tmp_path / "r.yaml"), "--runs", "3", "-o", out],
    }[command]
    refused = runner.invoke(main, args)
    _one_line_error(refused, "Lambda layer")
    assert not os.path.exists(out)
    result = runner.invoke(main, [*args, "--unsafe"] + (["--json"] if command != "compress"
                                                         else []))
    assert result.exit_code == 0, result.output
    assert os.path.exists(out)


def test_labels_beyond_the_model_outputs(runner, trained_cnn_path, int8_path, mnist, tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, x=mnist.x_test[:100], y=(mnist.y_test[:100] + 3))
    _one_line_error(runner.invoke(main, ["bench", str(int8_path), "--data", str(path)]),
                    "labels up to 12")
    out = tmp_path / "p.keras"
    _one_line_error(runner.invoke(main, ["prune", str(trained_cnn_path), "--data", str(path),
                                         "-o", str(out)]), "has 10 outputs")
    assert not out.exists()


def test_unwritable_outputs_fail_before_any_work(runner, trained_cnn_path, tmp_path):
    (tmp_path / "file").write_text("x")
    for out, match in ((tmp_path / "file" / "p.keras", "is a file, not a folder"),
                       ("/proc/tfcompress-test/p.keras", "not writable")):
        result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist",
                                      "-o", str(out)])
        _one_line_error(result, match)
        assert "Epoch" not in result.output
    result = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist",
                                  "-o", str(tmp_path / "file")])
    _one_line_error(result, "is a file")


def test_compress_into_a_link_to_the_input_folder(runner, trained_cnn_path, tmp_path):
    src = tmp_path / "models"
    src.mkdir()
    model = src / "00_baseline.keras"
    model.write_bytes(open(trained_cnn_path, "rb").read())
    before = model.read_bytes()
    (tmp_path / "out").symlink_to(src, target_is_directory=True)
    result = runner.invoke(main, ["compress", str(model), "--data", "mnist",
                                  "-o", str(tmp_path / "out")])
    _one_line_error(result, "never overwrites an input")
    assert model.read_bytes() == before and os.listdir(src) == ["00_baseline.keras"]


def test_bad_recipes_and_state_files(runner, trained_cnn_path, tmp_path):
    recipe = tmp_path / "r.yaml"
    for text, match in (("steps:\n  - prune: {}\n    search: 5\n", "search must be a mapping"),
                        ("x: &a {epochs: 1}\nsteps:\n  - qat: *a\n", "alias"),
                        ("steps:\n  - qat: {epochs: -1}\n", "setting 'epochs'")):
        recipe.write_text(text)
        result = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist",
                                      "--recipe", str(recipe), "-o", str(tmp_path / "out")])
        _one_line_error(result, match)
        assert not (tmp_path / "out").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "state.json").write_text("[]")
    result = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist",
                                  "-o", str(tmp_path / "used")])
    _one_line_error(result, "not a tfcompress state file")


def test_a_damaged_tflite_file_is_one_line(runner, int8_path, tmp_path):
    content = bytearray(open(str(int8_path), "rb").read())
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(content[: len(content) // 3]))
    _one_line_error(runner.invoke(main, ["bench", str(bad)]), "not a valid .tflite model")


def test_qat_checks_its_outputs_before_training(runner, trained_cnn_path, tmp_path):
    out = str(tmp_path / "q.tflite")
    result = runner.invoke(main, ["qat", str(trained_cnn_path), "--data", "mnist", "-o", out,
                                  "--keras-output", out])
    assert result.exit_code == 2 and "two different paths" in result.output
    assert "Epoch" not in result.output and not os.path.exists(out)


def test_flags_are_named_in_errors(runner, trained_cnn_path, tmp_path):
    result = runner.invoke(main, ["factorize", str(trained_cnn_path), "--energy", "0.9",
                                  "--rank-ratio", "0.5", "-o", str(tmp_path / "f.keras")])
    assert result.exit_code == 2 and "--rank-ratio or --energy" in result.output
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", "mnist",
                                  "--sparsity", "0.8", "--granularity", "2:4",
                                  "-o", str(tmp_path / "p.keras")])
    assert result.exit_code == 2 and "leave out --sparsity" in result.output


def test_strict_fails_a_run_that_misses_its_budget(runner, trained_cnn_path, small_npz,
                                                    tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - prune: {sparsity: 0.97, epochs: 1}\n")
    result = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", small_npz,
                                  "--recipe", str(recipe), "--runs", "3", "--strict",
                                  "--max-accuracy-drop", "0", "-o", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "does NOT meet the accuracy budget" in result.stdout
    assert json.loads((tmp_path / "out" / "report.json").read_text())["meets_budget"] is False


def test_bench_times_several_files_side_by_side(runner, int8_path, trained_cnn_path, tmp_path):
    f32 = str(tmp_path / "f32.tflite")
    assert runner.invoke(main, ["export", str(trained_cnn_path), "-o", f32, "--quantize",
                                "float32"]).exit_code == 0
    result = runner.invoke(main, ["bench", f32, str(int8_path), "--runs", "20", "--json"])
    assert result.exit_code == 0, result.output
    assert "side by side" in result.stderr
    assert [r["runs"] for r in json.loads(result.stdout)] == [20, 20]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tfcompress", *args], capture_output=True,
                          text=True, timeout=300)


def test_quiet_by_default_and_everything_with_verbose(trained_cnn_path, tmp_path):
    out = str(tmp_path / "m.tflite")
    quiet = _cli("export", str(trained_cnn_path), "-o", out, "--quantize", "int8", "--data",
                 "mnist")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines()[0].startswith("converting ")
    for noise in ("oneDNN", "cuda", "XNNPACK", "fully_quantize", "WARNING", "absl"):
        assert noise not in quiet.stderr, quiet.stderr
    loud = _cli("export", str(trained_cnn_path), "-o", out + "2", "--quantize", "int8",
                "--data", "mnist", "--verbose")
    assert loud.returncode == 0 and "fully_quantize" in loud.stderr


def test_python_dash_m_and_the_typed_marker():
    import tfcompress

    assert _cli("--help").stdout.startswith("Usage: tfcompress")
    assert os.path.isfile(os.path.join(os.path.dirname(tfcompress.__file__), "py.typed"))


def test_saved_models_load_after_import_tfcompress_in_a_fresh_process(tmp_path):
    from tfcompress.distillation import Distiller
    from tfcompress.quantization import quantize_aware

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(
        keras.layers.Conv2D(4, 3)(inputs))))
    quantize_aware(model).save(tmp_path / "qat.keras")
    Distiller(model, keras.models.clone_model(model)).save(tmp_path / "distiller.keras")
    for first in ("import tfcompress, keras", "import keras, tfcompress"):
        code = (f"{first}, sys\n"
                f"for name in ('qat', 'distiller'):\n"
                f"    m = keras.saving.load_model(sys.argv[1] + f'/{{name}}.keras')\n"
                f"    print(type(m).__name__)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == ["Functional", "Distiller"]
    plain = subprocess.run([sys.executable, "-c", "import sys, tfcompress; "
                            "print('tensorflow' in sys.modules)"], capture_output=True, text=True)
    assert plain.stdout.strip() == "False"


def _folder(root, images, labels, classes):
    from PIL import Image

    for c in classes:
        (root / str(c)).mkdir(parents=True, exist_ok=True)
    for i, (x, y) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray((x[:, :, 0] * 255).astype(np.uint8)).save(root / str(y) / f"{i}.png")
    return str(root)


def test_data_with_one_class_or_missing_class_folders_is_refused(runner, trained_cnn_path,
                                                                 int8_path, mnist, tmp_path):
    x, y = mnist.x_test[:40], mnist.y_test[:40]
    threes = x[y == 3][:6]
    one_folder = _folder(tmp_path / "one", threes, [3] * len(threes), [3])
    for args in (["bench", str(int8_path), "--data", one_folder],
                 ["prune", str(trained_cnn_path), "--data", one_folder, "-o",
                  str(tmp_path / "p.keras")],
                 ["compress", str(trained_cnn_path), "--data", one_folder, "-o",
                  str(tmp_path / "c")]):
        _error_line(runner.invoke(main, args), "has 1 class folder(s) (3)")
    assert sorted(os.listdir(tmp_path)) == ["one"]
    # every class folder, one of them holding images: one warning line, then the refusal
    all_folders = _folder(tmp_path / "all", threes, [3] * len(threes), range(10))
    result = runner.invoke(main, ["prune", str(trained_cnn_path), "--data", all_folders, "-o",
                                  str(tmp_path / "p.keras")])
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("warning: ") and "0, 1, 2, 4, 5, 6, 7, 8, 9 hold no images" in \
        lines[0]
    assert lines[-1].startswith("Error: ") and "holds one class only (3)" in lines[-1]
    npz = tmp_path / "threes.npz"
    np.savez(npz, x=threes, y=np.full(len(threes), 3))
    _error_line(runner.invoke(main, ["bench", str(int8_path), "--data", str(npz)]),
                    "holds one class only (3)")


def test_a_metric_that_cannot_score_the_outputs_fails_before_the_scan(
        runner, trained_cnn_path, small_npz, tmp_path):
    out = tmp_path / "scan"
    result = runner.invoke(main, ["sensitivity", str(trained_cnn_path), "--data", small_npz,
                                  "--metric", "mse", "--out", str(out), "--samples", "50"])
    _error_line(result, "The metric 'mean_squared_error' cannot compare the data's targets")
    assert not out.exists()
    result = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", small_npz,
                                  "--metric", "mse", "--max-accuracy-drop", "0.1", "-o",
                                  str(tmp_path / "c")])
    _error_line(result, "cannot compare")
    assert not (tmp_path / "c").exists()
    result = runner.invoke(main, ["bench", str(trained_cnn_path), "--data", small_npz,
                                  "--metric", "top1", "--metric-direction", "min"])
    _error_line(result, "metric 'top1' is better when higher")


def test_nan_is_refused_by_click_before_any_work(runner, trained_cnn_path, small_npz, tmp_path):
    for args in (["sensitivity", str(trained_cnn_path), "--data", small_npz, "--target", "nan",
                  "--out", str(tmp_path / "s")],
                 ["prune", str(trained_cnn_path), "--data", small_npz, "--sparsity", "nan",
                  "-o", str(tmp_path / "p.keras")],
                 ["compress", str(trained_cnn_path), "--data", small_npz,
                  "--max-accuracy-drop", "nan", "-o", str(tmp_path / "c")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and "'nan' is not a number" in result.output, args
    assert os.listdir(tmp_path) == []


def test_a_damaged_saved_model_exports_to_one_line(runner, tmp_path):
    saved = tmp_path / "sm"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"")
    result = runner.invoke(main, ["export", str(saved), "-o", str(tmp_path / "m.tflite"),
                                  "--quantize", "float32"])
    _error_line(result, "Could not read the SavedModel")
    assert sorted(os.listdir(tmp_path)) == ["sm"]


def test_an_identity_lambda_is_nothing_to_keep_in_float(runner, lambda_model_path, small_npz,
                                                        tmp_path):
    out = tmp_path / "q.tflite"
    result = runner.invoke(main, ["qat", lambda_model_path, "--data", small_npz, "--epochs",
                                  "1", "-o", str(out), "--unsafe", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["integer_only"] is True
