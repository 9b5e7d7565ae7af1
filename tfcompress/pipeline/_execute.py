"""One step of a run, executed: the step's transform (or its search), the model saved, its
file exported and measured in LiteRT (and LiteRT's reference kernels), and its record; and
the baseline, measured the same way. A step that fails leaves none of its files."""

import contextlib
import json
import os
import random
import time
from typing import Any

import keras
import numpy as np

from tfcompress import _io, _training
from tfcompress.metrics import near_chance
from tfcompress.pipeline import _steps
from tfcompress.pipeline._measure import measure, metric_words
from tfcompress.pipeline._recipe import REPAIRS, SEARCHED, Step
from tfcompress.pipeline._records import StepRecord
from tfcompress.pipeline._search import search
from tfcompress.pipeline._state import Run
from tfcompress.quantization import count_params


@contextlib.contextmanager
def seeded(seed: int):
    """Seeds Python, NumPy and Keras for a step; Python's and NumPy's global states are put
    back afterwards (Keras/TensorFlow keep the seeded generator)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@contextlib.contextmanager
def step_files(paths: list[str], index: int, done: int, out: str) -> Any:
    """Removes the files of step `index` if it fails, and says in the error what the folder
    keeps (a refusal that says "Nothing was written" speaks of this step only)."""
    try:
        yield
    except BaseException as e:
        for path in paths:
            with contextlib.suppress(OSError):
                os.remove(path)
        if isinstance(e, ValueError) and "Nothing was written." in str(e):
            kept = (f"Step {index} wrote nothing; {out} keeps the baseline and "
                    f"{'step 1' if done == 1 else f'steps 1-{done}'}, which a run with a "
                    "corrected recipe resumes from." if done else "Nothing was written.")
            raise ValueError(str(e).replace("Nothing was written.", kept)) from None
        raise


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: str(o)))


def check_test_is_unseen(test_acc: float, val_acc: float, n_test: int, n_val: int,
                          warn: Any) -> None:
    """Warns when the baseline scores far higher on the test images than on the validation
    images: a sign that it was trained on the test images."""
    p = (test_acc + val_acc) / 2
    noise = 3 * np.sqrt(max(p * (1 - p), 1e-4) * (1 / max(n_test, 1) + 1 / max(n_val, 1)))
    gap = test_acc - val_acc
    if gap > max(0.01, noise):
        warn(f"the input model scores {100 * test_acc:.2f} % on the test images but "
             f"{100 * val_acc:.2f} % on the validation images: it may have been trained on the "
             "test images, and then every figure against the baseline is optimistic. Pass "
             "images it never saw with --test (Python: test=...).")


def measure_baseline(run: Run, model: keras.Model) -> None:
    """Saves and measures the input model as float32 TFLite, once per folder: the baseline
    every step is compared with, and its validation score, which searches are judged by."""
    run.say("baseline: the input model as float32 TFLite")
    path, tflite = run.path("00_baseline.keras"), run.path("00_baseline_float32.tflite")
    run.trace["written"] += [path, tflite, run.state_path]
    _io.save_model_atomic(model, path)
    m = measure(model, tflite, "float32", run.fit_ds, run.test_ds, run.runs, run.metric)
    samples = m.pop("samples")
    run.state["baseline"] = StepRecord(0, "baseline", "input model, float32", path, tflite,
                                       count_params(model), delta=0.0, seconds=0.0, **m
                                       ).to_dict()
    run.state["baseline_val_accuracy"] = _training.evaluate(model, run.fit_ds.test, run.metric)
    if run.metric.classifies:
        classes = int(model.outputs[0].shape[-1])
        if near_chance(m["accuracy"], classes, samples):
            run.warn(f"the input model scores {100 * m['accuracy']:.2f} % on the test images, "
                     f"no better than chance for {classes} classes: check that the images "
                     "reach it in the range it was trained on (--input-range; Python: "
                     "preprocessing=). Every figure of this run is measured against it.")
        check_test_is_unseen(m["accuracy"], run.state["baseline_val_accuracy"], samples,
                             run.fit_ds.test.size or samples, run.warn)
    run.save_state()


def run_step(run: Run, index: int, step: Step, current: keras.Model, baseline: StepRecord
             ) -> tuple[StepRecord, keras.Model]:
    """Runs step `index` on `current`: the new model and its record (already in the state)."""
    run.say(f"[{index}/{len(run.plan.steps)}] {step.describe()}")
    start = time.perf_counter()
    stem = run.path(f"{index:02d}_{step.kind}")
    with seeded(run.seed + index):
        new, info, skipped, search = _transform(run, index, step, current)
    if skipped:
        run.say(f"  skipped: {skipped}")
    mode = step.get("mode") if step.kind == "export" else "int8"
    model_path, tflite = f"{stem}.keras", f"{stem}_{mode}.tflite"
    with step_files([model_path, tflite], index, len(run.state["completed"]), run.out):
        _io.save_model_atomic(new, model_path)
        device = _export_settings(run, step, new, info) if step.kind == "export" else {}
        m = measure(new, tflite, mode, run.fit_ds, run.test_ds, run.runs, run.metric, **device)
    m.pop("samples")
    metric = run.metric
    record = StepRecord(index, step.kind, _description(step, info, search), model_path, tflite,
                        count_params(new),
                        delta=round(metric.display(m["accuracy"])
                                    - metric.display(baseline.accuracy),
                                    2 + 2 * (not metric.percent)),
                        seconds=round(time.perf_counter() - start, 1), skipped=skipped,
                        info=jsonable(info), search=search, **m)
    run.complete(record)
    run.say(f"  {record.params:,} params, {record.size_bytes:,} bytes, p50 "
            f"{record.latency_ms_p50:.3f} ms, {metric_words(metric)} "
            f"{metric.format(record.accuracy)} ({record.delta:+.4g} {metric.unit or 'change'})")
    return record, new


def _transform(run: Run, index: int, step: Step, current: keras.Model
               ) -> tuple[keras.Model, dict, str | None, list | None]:
    """The step's model, its info, why it was skipped (or None) and its search rows."""
    if step.kind == "export":
        return current, {}, None, None
    if step.search is not None:
        outcome, rows = search(run, step, current, index)
        return outcome.model, outcome.info, outcome.skipped, rows
    outcome = _steps.run(step, current, run.fit_ds, run.batch_size, run.verbose,
                         run.safe_mode, run.metric, run.teacher)
    if outcome.skipped is None:
        val = _training.evaluate(outcome.model, run.fit_ds.test, run.metric)
        worse = run.metric.worse_by(val, run.state["baseline_val_accuracy"])
        outcome.info["validation_worse_by"] = worse
        over = worse > run.limit(index) + 1e-9
        if over and step.kind == "qat":
            return _qat_or_post_training(run, index, current, outcome, worse)
        if over:
            run.warn(f"step {index} ({step.kind}) leaves the model {worse:.3g} "
                     f"{run.metric.unit or run.metric.name} below the baseline on the "
                     f"validation data, over its share of the budget ({run.limit(index):.3g}); "
                     "its setting is fixed in the recipe, so it was kept. Give the step a "
                     "search (strategy: backoff) to let it back off.")
    return outcome.model, outcome.info, outcome.skipped, None


def _qat_or_post_training(run: Run, index: int, current: keras.Model, outcome: Any,
                          worse: float) -> tuple[keras.Model, dict, str | None, None]:
    """The QAT model scored outside the budget on the validation data: its int8 file is
    scored (what gets shipped), and the step keeps it unless post-training int8 of the model
    before it does better."""
    from tfcompress.pipeline._measure import file_score

    unit, base = run.metric.unit or run.metric.name, run.state["baseline_val_accuracy"]
    qat = run.metric.worse_by(file_score(outcome.model, run.path(
        f".{index:02d}_qat_check.tflite"), run.fit_ds, run.metric), base)
    info = {**outcome.info, "file_worse_by": qat}
    if qat <= run.limit(index) + 1e-9:
        return outcome.model, info, None, None
    ptq = run.metric.worse_by(file_score(current, run.path(
        f".{index:02d}_post_training.tflite"), run.fit_ds, run.metric), base)
    info["post_training_worse_by"] = ptq
    if ptq < qat:
        return current, info, (
            f"quantization-aware training left the int8 file {qat:.3g} {unit} below the "
            f"baseline on the validation data, post-training int8 {ptq:.3g}: the export "
            "quantizes after training instead"), None
    run.warn(f"step {index} (qat) leaves the int8 file {qat:.3g} {unit} below the baseline on "
             f"the validation data, over the budget; post-training int8 does no better "
             f"({ptq:.3g}), so it was kept.")
    return outcome.model, info, None, None


def _export_settings(run: Run, step: Step, model: keras.Model, info: dict) -> dict:
    """What an export step passes to `to_tflite`: its target and device limits, and the layers
    to keep in float (`auto`: only where post-training int8 alone leaves the model outside
    the budget on the validation data, picked by a quantize scan)."""
    from tfcompress import _targets

    target = step.get("target")
    device = {"target": target, **{k: step.get(k) for k in _targets.get(target).device_options
                                   if step.get(k) not in (None, False)}}
    device.update({k: True for k in REPAIRS if step.get(k)})
    float_layers = step.get("float_layers")
    if float_layers == "auto":
        float_layers = _auto_float_layers(run, model, info)
    if float_layers:
        device["float_layers"] = float_layers
        info["float_layers"] = list(float_layers)
    return device


def _auto_float_layers(run: Run, model: keras.Model, info: dict) -> list[str]:
    from tfcompress.quantization import is_quantize_aware

    if is_quantize_aware(model):  # the qat step made the integer model
        return []
    from tfcompress.pipeline._measure import file_score

    metric, base = run.metric, run.state["baseline_val_accuracy"]
    int8 = file_score(model, run.path(".export_int8_check.tflite"), run.fit_ds, metric)
    worse = metric.worse_by(int8, base)
    info["int8_validation_worse_by"] = worse
    if worse <= run.budget + 1e-9:
        run.say(f"  int8 alone is {worse:.3g} {metric.unit or metric.name} below the baseline "
                "on the validation data, within the budget: no float layers")
        return []
    from tfcompress.debug import sensitivity

    float_worse = metric.worse_by(_training.evaluate(model, run.fit_ds.test, metric), base)
    room = max(run.budget - float_worse, 0.0)
    scan = sensitivity(model, run.fit_ds, "quantize", metric=metric)
    chosen = scan.float_layers(budget=room / (100 if metric.percent else 1))
    info["sensitivity"] = scan.to_dict()
    run.say(f"  int8 alone is {worse:.3g} {metric.unit or metric.name} below the baseline on "
            f"the validation data; kept in float: {', '.join(chosen) or 'none helps'}")
    return chosen


def _description(step: Step, info: dict, search: list | None) -> str:
    description = step.describe()
    if search is not None and info.get("chosen") is not None:
        chosen = step.with_setting(SEARCHED[step.kind], info["chosen"])
        description = f"{chosen.describe()}, searched"
    if step.kind == "prune" and "sparsity_after" in info:
        description += f"; reached sparsity {info['sparsity_after']:.3f}"
    return description


