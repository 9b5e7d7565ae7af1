"""Issue 12: a run never loses or mixes anything: inputs, resume identity, locking, budget."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfcompress import _io
from tfcompress.data import Dataset
from tfcompress.pipeline import compress

# No training: a float32 baseline and a float16 export, a few seconds.
FAST = {"name": "fast", "steps": [{"export": {"mode": "float16"}}]}


@pytest.fixture(scope="module")
def small(mnist):
    return Dataset(mnist.x_train[:600], mnist.y_train[:600], mnist.x_test[:200],
                   mnist.y_test[:200], name="mnist-600")


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _run(model, data, out, **kwargs):
    kwargs.setdefault("progress", False)
    return compress(model, data, kwargs.pop("recipe", FAST), out, runs=3, **kwargs)


def test_an_output_folder_that_links_to_the_input_folder_is_refused(trained_cnn, tmp_path,
                                                                   small):
    src = tmp_path / "models"
    src.mkdir()
    model = src / "01_prune.keras"  # named like a step output
    trained_cnn.save(model)
    before = _digest(model)
    link = tmp_path / "out"
    link.symlink_to(src, target_is_directory=True)
    with pytest.raises(ValueError, match="named like a file this run writes"):
        _run(str(model), small, link)
    assert _digest(model) == before and sorted(os.listdir(src)) == ["01_prune.keras"]
    # An output folder inside an image-folder input would add to the data.
    with pytest.raises(ValueError, match="inside the input folder"):
        _run(trained_cnn, str(src), src / "out")
    assert not (src / "out").exists()


def test_resume_refuses_another_model_data_or_budget(trained_cnn, small, tmp_path):
    out = tmp_path / "out"
    recipe = FAST
    first = _run(trained_cnn, small, out, recipe=recipe)
    other = keras.models.clone_model(trained_cnn)  # same architecture, other weights
    with pytest.raises(ValueError, match="different input model"):
        _run(other, small, out, recipe=recipe)
    changed = Dataset(small.x_train[::-1].copy(), small.y_train[::-1].copy(), small.x_test,
                      small.y_test, name=small.name)  # same name, other contents
    with pytest.raises(ValueError, match="different data"):
        _run(trained_cnn, changed, out, recipe=recipe)
    with pytest.raises(ValueError, match="different accuracy budget"):
        _run(trained_cnn, small, out, recipe=recipe, max_accuracy_drop=3.0)
    again = _run(trained_cnn, small, out, recipe=recipe)  # the same inputs resume
    assert again.final.accuracy == first.final.accuracy


def test_a_running_run_locks_its_folder_and_a_killed_one_does_not(trained_cnn, small,
                                                                  tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with _io.folder_lock(out), pytest.raises(ValueError, match="in use by another"):
        _run(trained_cnn, small, out)
    code = ("import sys, time; from tfcompress import _io\n"
            "with _io.folder_lock(sys.argv[1]):\n print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"process {holder.pid}"):
            _run(trained_cnn, small, out)
        holder.send_signal(signal.SIGKILL)  # a killed run leaves its lock file behind
        holder.wait(10)
    finally:
        holder.kill()
    assert (out / ".lock").exists()
    assert _run(trained_cnn, small, out).final.step == "export"


def test_state_paths_are_relative_so_a_moved_folder_resumes_from_itself(trained_cnn, small,
                                                                        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(trained_cnn, small, "out")
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["baseline"]["model_path"] == "00_baseline.keras"
    assert state["completed"][0]["tflite_path"] == "01_export_float16.tflite"
    shutil.copytree(tmp_path / "out", tmp_path / "copy")
    shutil.rmtree(tmp_path / "out")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _run(trained_cnn, small, tmp_path / "copy")
    assert result.final.tflite_path == str(tmp_path / "copy" / "01_export_float16.tflite")


def test_bad_recipe_values_fail_before_any_work_and_leave_nothing(trained_cnn, small,
                                                                  tmp_path):
    out = tmp_path / "out"
    for recipe, match in (
            ({"steps": [{"prune": {"epochs": -1}}]}, "'prune', setting 'epochs'"),
            ({"steps": [{"prune": {"sparsity": "half"}}]}, "setting 'sparsity'"),
            ({"steps": [{"prune": {"per_layer": "yes"}}]}, "setting 'per_layer'"),
            ({"steps": [{"export": {"float_layers": "fc1"}}]}, "setting 'float_layers'"),
            ({"steps": [{"qat": {}}, {"export": {"float_layers": ["fc1"]}}]},
             "a list of layers needs no qat step"),
            ({"steps": [{"prune": {}, "search": 5}]}, "search must be a mapping")):
        with pytest.raises(ValueError, match=match):
            _run(trained_cnn, small, out, recipe=recipe)
        assert not out.exists()


def test_a_failed_first_step_leaves_no_folder_and_the_corrected_recipe_runs(
        trained_cnn, small, tmp_path, monkeypatch):
    from tfcompress.pipeline import _steps

    def diverge(*args, **kwargs):
        raise ValueError("Training stopped: the loss became nan at batch 3.")

    out = tmp_path / "out"
    recipe = {"steps": [{"qat": {"epochs": 1, "learning_rate": 1e-4}}]}
    monkeypatch.setattr(_steps, "run", diverge)
    with pytest.raises(ValueError, match="loss became nan"):
        _run(trained_cnn, small, out, recipe=recipe)
    assert not out.exists()
    monkeypatch.undo()
    assert _run(trained_cnn, small, out).final.step == "export"


def test_state_file_that_is_not_ours_is_one_clear_error(trained_cnn, small, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "state.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="not a tfcompress state file"):
        _run(trained_cnn, small, out)
    assert json.loads((out / "state.json").read_text()) == [1, 2, 3]


def test_a_damaged_step_record_is_one_clear_error(trained_cnn, small, tmp_path):
    out = tmp_path / "out"
    _run(trained_cnn, small, out)
    state = json.loads((out / "state.json").read_text())
    del state["completed"][0]["model_path"]
    (out / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="is damaged: a step record lacks model_path"):
        _run(trained_cnn, small, out)


def test_the_budget_always_has_a_verdict_and_misses_are_said(trained_cnn, small, tmp_path):
    result = _run(trained_cnn, small, tmp_path / "a")
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["max_accuracy_drop"] == 1.0 and report["meets_budget"] is True
    assert result.ratios()["meets_budget"] is True and "accuracy_delta" in result.ratios()
    assert "meets the accuracy budget of -1 points" in (tmp_path / "a" / "report.md").read_text()
    lines = []
    recipe = {"steps": [{"prune": {"epochs": 1}, "search": {"values": [0.97]}}]}
    result = compress(trained_cnn, small, recipe, tmp_path / "b", runs=3, progress=lines.append,
                      max_accuracy_drop=0.0)
    md = (tmp_path / "b" / "report.md").read_text()
    # No value within the budget: the step is skipped, the model passes through unchanged,
    # and the run meets its budget instead of keeping a model outside it.
    assert any("skipped: no value of sparsity keeps the model within" in x for x in lines)
    assert "skipped: no value of sparsity" in md
    assert result.final.params == result.baseline.params and result.meets_budget
    assert report["data_sources"]["validation"] == (
        "mnist-600: training images held out (seed 0) (60 images)")


def test_test_images_are_used_only_for_the_figures_and_a_seen_test_set_is_flagged(
        mnist, tmp_path):
    from tfcompress.reference import compile_for_classification, reference_cnn

    keras.utils.set_random_seed(0)
    memorised = compile_for_classification(reference_cnn())
    memorised.fit(mnist.x_train[:300], mnist.y_train[:300], epochs=25, verbose=0)
    seen = Dataset(mnist.x_train[300:800], mnist.y_train[300:800], mnist.x_train[:300],
                   mnist.y_train[:300], name="seen")  # the model trained on its test part
    unseen = (mnist.x_test[:300], mnist.y_test[:300])
    lines = []
    result = compress(memorised, seen, FAST, tmp_path / "a", runs=3, progress=lines.append,
                      val=(mnist.x_test[300:600], mnist.y_test[300:600]))
    assert any("may have been trained on the test images" in x for x in lines)
    assert "--test" in (tmp_path / "a" / "report.md").read_text()
    clean = compress(memorised, seen, FAST, tmp_path / "b", runs=3, progress=False,
                     val=(mnist.x_test[300:600], mnist.y_test[300:600]), test=unseen)
    assert not clean.warnings
    assert clean.data_sources["test"] == (
        "(x, y) arrays: all of it, used for nothing else (300 images)")
    assert clean.baseline.accuracy < result.baseline.accuracy


def test_compress_never_changes_the_model_and_prints_progress(trained_cnn, small, tmp_path,
                                                               capsys):
    weights = [w.copy() for w in trained_cnn.get_weights()]
    _run(trained_cnn, small, tmp_path / "out", progress=None)
    assert all(np.array_equal(a, b) for a, b in zip(weights, trained_cnn.get_weights(),
                                                    strict=True))
    assert "[1/1] export(mode=float16)" in capsys.readouterr().err


def test_a_frozen_model_cannot_be_pruned_and_says_so(trained_cnn, small):
    from tfcompress.pruning import prune

    frozen = keras.models.clone_model(trained_cnn)
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        prune(frozen, small, sparsity=0.5, epochs=1)


def test_a_killed_export_leaves_nothing_in_the_system_temp_folder(trained_cnn, tmp_path,
                                                                 monkeypatch):
    import tempfile

    from tfcompress.export import to_tflite

    made = []
    real = tempfile.TemporaryDirectory

    def recording(*args, **kwargs):
        made.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recording)
    to_tflite(trained_cnn, tmp_path / "sub" / "m.tflite", "float32")
    assert made == [str(tmp_path / "sub")]
    assert os.listdir(tmp_path / "sub") == ["m.tflite"]


def test_an_unfinished_run_resumes_with_a_corrected_recipe(trained_cnn, small, tmp_path,
                                                            monkeypatch):
    from tfcompress.pipeline import _steps

    real = _steps.run
    recipe = {"name": "r", "steps": [{"prune": {"sparsity": 0.5, "epochs": 1}},
                                     {"qat": {"epochs": 1, "learning_rate": 10.0}}]}

    def diverging(step, *args, **kwargs):
        if step.kind == "qat":
            raise ValueError("Training stopped: the loss became nan at batch 0.")
        return real(step, *args, **kwargs)

    monkeypatch.setattr(_steps, "run", diverging)
    with pytest.raises(ValueError, match="loss became nan"):
        _run(trained_cnn, small, tmp_path, recipe=recipe)
    calls = []
    monkeypatch.setattr(_steps, "run", lambda step, *a, **k: calls.append(step.kind) or real(
        step, *a, **k))
    recipe["steps"][1] = {"qat": {"epochs": 1}}
    result = _run(trained_cnn, small, tmp_path, recipe=recipe)
    assert calls == ["qat"] and [r.step for r in result.steps] == ["prune", "qat"]
    assert "reached sparsity 0.5" in result.steps[0].description


def test_a_microcontroller_budget_constrains_the_search_and_the_export(trained_cnn, small,
                                                                       tmp_path):
    recipe = {"name": "mcu", "steps": [
        {"prune": {"granularity": "channel", "round_to": 8, "epochs": 1},
         "search": {"values": [0.25, 0.75], "objective": "size"}},
        {"export": {"mode": "int8", "target": "tflm", "max_flash": 40_000}}]}
    result = _run(trained_cnn, small, tmp_path, recipe=recipe, max_accuracy_drop=100)
    rows = {row["sparsity"]: row for row in result.steps[0].search}
    assert rows[0.25]["fits_device"] is False and rows[0.75]["fits_device"] is True
    assert rows[0.75]["chosen"] and result.final.size_bytes <= 40_000
    assert result.final.accuracy_reference is not None
    header = (tmp_path / "02_export_int8.h").read_text()
    assert "ArenaSize" in header and (tmp_path / "02_export_int8_ops.h").is_file()


def test_resume_tells_streams_and_folders_by_their_content(trained_cnn, small, tmp_path):
    import tensorflow as tf
    from PIL import Image

    def stream(x, y):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(100)

    x, y = small.x_train, small.y_train
    val, test = stream(small.x_test[:100], small.y_test[:100]), stream(
        small.x_test[100:], small.y_test[100:])
    _run(trained_cnn, stream(x, y), tmp_path / "s", val=val, test=test)
    shuffled = np.random.default_rng(0).permutation(len(x))  # same content, another order
    _run(trained_cnn, stream(x[shuffled], y[shuffled]), tmp_path / "s", val=val, test=test)
    with pytest.raises(ValueError, match="different data"):  # same shapes, other images
        _run(trained_cnn, stream(x[::-1] * 0.5, y[::-1]), tmp_path / "s", val=val, test=test)

    folder = tmp_path / "images"
    for c in range(10):
        (folder / str(c)).mkdir(parents=True)
    for i in range(60):
        Image.fromarray((x[i, :, :, 0] * 255).astype(np.uint8)).save(folder / str(y[i]) /
                                                                     f"{i}.png")
    _run(trained_cnn, str(folder), tmp_path / "f")
    victim = next(folder.rglob("*.png"))
    st = os.stat(victim)
    data = bytearray(victim.read_bytes())
    other = Image.fromarray((x[99, :, :, 0] * 255).astype(np.uint8))
    other.save(victim)
    victim.write_bytes(victim.read_bytes()[:len(data)].ljust(len(data), b"\0"))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same time
    assert os.stat(victim).st_size == st.st_size
    with pytest.raises(ValueError, match="different data"):
        _run(trained_cnn, str(folder), tmp_path / "f")


def test_scratch_folders_of_killed_exports_are_cleaned_and_running_ones_kept(trained_cnn,
                                                                            tmp_path):
    import fcntl

    from tfcompress.export import to_tflite

    killed = tmp_path / ".tfcompress-export-killed"
    (killed / "saved_model").mkdir(parents=True)
    (killed / ".lock").write_text("12345")  # its process is gone: nobody holds the lock
    running = tmp_path / ".tfcompress-export-running"
    running.mkdir()
    fd = os.open(running / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running export holds it
    try:
        to_tflite(trained_cnn, tmp_path / "m.tflite", "float32")
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == [".tfcompress-export-running", "m.tflite"]


def test_a_refused_step_removes_its_files_and_says_what_the_folder_keeps(trained_cnn, small,
                                                                         tmp_path):
    tight = {"export": {"mode": "int8", "target": "tflm", "max_ram": 100}}
    out = tmp_path / "one"
    with pytest.raises(ValueError, match=r"over --max-ram 100\. Nothing was written\."):
        _run(trained_cnn, small, out, recipe={"steps": [tight]})
    assert not out.exists()
    out = tmp_path / "two"
    with pytest.raises(ValueError, match=r"Step 2 wrote nothing; .* keeps the baseline and "
                                         r"step 1, which a run with a corrected recipe"):
        _run(trained_cnn, small, out, recipe={"steps": [
            {"prune": {"sparsity": 0.3, "epochs": 1}}, tight]})
    assert not [n for n in os.listdir(out) if n.startswith("02_")]
    assert (out / "01_prune.keras").exists()


@pytest.mark.slow
def test_an_npu_target_ranks_the_search_by_vela_and_compares_on_the_npu(trained_cnn, small,
                                                                        tmp_path):
    from tfcompress import _vela

    if not _vela.installed():
        pytest.skip("needs the npu extra")
    recipe = {"name": "npu", "steps": [
        {"prune": {"granularity": "channel", "round_to": 8, "epochs": 1, "shrink": True},
         "search": {"values": [0.25, 0.75], "objective": "latency"}},
        {"export": {"mode": "int8"}}]}
    result = _run(trained_cnn, small, tmp_path, recipe=recipe, max_accuracy_drop=100,
                  target="ethos-u55-128", device={"max_latency_ms": 0.15})
    rows = {row["sparsity"]: row for row in result.steps[0].search}
    assert rows[0.25]["npu_ms"] > 0.15 >= rows[0.75]["npu_ms"] > 0, rows
    assert rows[0.25]["fits_device"] is False and rows[0.75]["chosen"]
    assert rows[0.75]["latency"] == rows[0.75]["npu_ms"]  # ranked by Vela, not the host
    npu = result.npu
    assert npu["target"] == "ethos-u55-128" and npu["final"]["inference_ms"] <= 0.15
    assert npu["baseline_int8"]["inference_ms"] > npu["final"]["inference_ms"]
    assert npu["faster"] == round(npu["baseline_int8"]["inference_ms"]
                                  / npu["final"]["inference_ms"], 2) > 1
    assert result.final.npu == npu["final"] and npu["final"]["cpu_ops"] == []
    report = (tmp_path / "report.md").read_text()
    assert "On the NPU `ethos-u55-128`" in report and f"{npu['faster']}x faster" in report
    assert "| FULLY_CONNECTED | " in report and " | NPU | " in report  # every op's place
    assert (tmp_path / "02_export_int8_vela.tflite").is_file()
    assert json.loads((tmp_path / "report.json").read_text())["npu"]["faster"] == npu["faster"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tfcompress-")]
