"""`compress`: run a recipe on a trained model, measure each step in LiteRT, resume after a stop."""

import contextlib
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import keras
import numpy as np

from tfcompress import _distribute, _io, _legacy, _loading, _training
from tfcompress.data import ArrayPart, Dataset, FilesPart, Part, as_part, load
from tfcompress.data._parts import is_stream
from tfcompress.metrics import Metric, as_metric
from tfcompress.pipeline import _steps
from tfcompress.pipeline._recipe import SEARCHED, Recipe, Step, load_recipe, shown_name
from tfcompress.quantization import count_params

STATE = "state.json"
HOLD_OUT = 0.1  # the share of training images held out for validation, as Dataset.hold_out


@dataclass(frozen=True)
class StepRecord:
    """One row of the report: a step's model, its int8 (or final) TFLite file and measurements.

    Accuracy is measured in LiteRT (XNNPACK) on the test images, and again with LiteRT's
    reference kernels (`accuracy_reference`, what TFLite Micro computes); `delta` is in points
    against the baseline (the input model as float32 TFLite).
    """

    index: int
    step: str
    description: str
    model_path: str
    tflite_path: str
    params: int
    size_bytes: int
    gzip_bytes: int
    latency_ms_p50: float
    latency_ms_p90: float
    accuracy: float
    delta: float
    seconds: float
    skipped: str | None = None
    info: dict | None = None
    search: list | None = None
    accuracy_reference: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PipelineResult:
    """Everything a `compress` run measured; also written to OUT_DIR/report.json.

    `max_accuracy_drop` is the budget in force (1 point unless another was given) and
    `meets_budget` its verdict; `data_sources` says which images each figure comes from;
    `warnings` lists what the run noticed and could not fix (e.g. a search with no value within
    budget).
    """

    recipe: dict
    data: str
    seed: int
    baseline: StepRecord
    steps: tuple[StepRecord, ...]
    max_accuracy_drop: float
    out_dir: str
    side_by_side: dict | None = None
    data_sources: dict | None = None
    warnings: tuple[str, ...] = ()
    metric: dict | None = None

    @property
    def final(self) -> StepRecord:
        return self.steps[-1] if self.steps else self.baseline

    @property
    def worse_by(self) -> float:
        """How much worse the final model scores than the baseline, in the metric's display
        units (points for a percentage); negative when it scores better."""
        lower_is_better = (self.metric or {}).get("direction") == "min"
        return self.final.delta if lower_is_better else -self.final.delta

    @property
    def meets_budget(self) -> bool:
        return self.worse_by <= self.max_accuracy_drop + 1e-9

    def ratios(self) -> dict:
        """Final vs baseline: how many times smaller on disk and gzipped, and faster (p50;
        from the two files timed side by side at the end of the run, where they were), the
        accuracy change in points and the budget's verdict."""
        b, f = self.baseline, self.final
        pair = self.side_by_side or {"baseline_ms_p50": b.latency_ms_p50,
                                     "final_ms_p50": f.latency_ms_p50}
        return {"smaller": round(b.size_bytes / f.size_bytes, 2),
                "smaller_gzip": round(b.gzip_bytes / f.gzip_bytes, 2),
                "faster_p50": round(pair["baseline_ms_p50"] / pair["final_ms_p50"], 2),
                "accuracy_delta": f.delta, "meets_budget": self.meets_budget}

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "data": self.data, "seed": self.seed,
                "data_sources": self.data_sources, "metric": self.metric,
                "baseline": self.baseline.to_dict(),
                "steps": [s.to_dict() for s in self.steps],
                "final": self.final.to_dict(), "ratios": self.ratios(),
                "side_by_side": self.side_by_side,
                "max_accuracy_drop": self.max_accuracy_drop, "meets_budget": self.meets_budget,
                "warnings": list(self.warnings)}


@contextlib.contextmanager
def _seeded(seed: int):
    """Seeds Python, NumPy and Keras for a step; Python's and NumPy's global states are put
    back afterwards (Keras/TensorFlow keep the seeded generator)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _whole(ds: Dataset) -> Part:
    """Both parts of a dataset as one (validation or test data used whole)."""
    if isinstance(ds.train, ArrayPart) and isinstance(ds.test, ArrayPart):
        return ArrayPart(np.concatenate([ds.train.x, ds.test.x]),
                         np.concatenate([ds.train.y, ds.test.y]), ds.name)
    if isinstance(ds.train, FilesPart) and isinstance(ds.test, FilesPart):
        return FilesPart(ds.train.files + ds.test.files,
                         np.concatenate([ds.train.labels, ds.test.labels]),
                         ds.train.image_size, ds.train.mode, ds.train.preprocessing, ds.name)
    raise ValueError(
        f"{ds.name} holds two streams, which tfcompress does not join: pass one stream "
        "(a tf.data.Dataset, a PyDataset or a function returning batches) for this data.")


def _splits(data: Any, val: Any, seed: int, test: Any = None, model: Any = None,
            preprocessing: Any = None) -> tuple[Dataset, Dataset, dict]:
    """(train + validation as a Dataset whose test part is the validation set, test Dataset,
    where each part's images come from). With `model`, folders are read as it takes them and
    every part is checked against it. Every part is read batch by batch (arrays, a folder's
    files or a user's stream); only a stream cannot be split, so with one `val` is needed."""
    def read(source: Any) -> Dataset:
        if model is None:
            return load(source, seed=seed, preprocessing=preprocessing)
        return _training.load_for(model, source, seed=seed, preprocessing=preprocessing)

    def whole(source: Any) -> tuple[Part, str]:
        """All of a source that is used whole (validation or test data)."""
        if isinstance(source, (tuple, Part)) or is_stream(source):
            part = as_part(source)
            return part, "(x, y) arrays" if isinstance(source, tuple) else part.name
        d = read(source)
        return _whole(d), d.name

    streamed = is_stream(data)
    if streamed:
        tr = as_part(data, "train")
        ds = Dataset.from_parts(tr, tr, (), tr.name)
    else:
        ds = read(data)
    name = ds.name
    te = None
    if test is None and not streamed:
        te, test_from = ds.test, f"{name}: its test part"
        tr, train_from = ds.train, f"{name}: its training part"
    elif test is None:
        tr, train_from = ds.train, f"{name}: all of it"
    else:  # --data is all for training; --test only for the reported figures
        te, test_name = whole(test)
        test_from = f"{test_name}: all of it, used for nothing else"
        tr, train_from = (ds.train if streamed else _whole(ds)), f"{name}: all of it"
    if val is None:
        tr, va = tr.split(HOLD_OUT, seed)
        val_from = f"{name}: training images held out (seed {seed})"
        train_from += " less the validation images"
    else:
        va, val_name = whole(val)
        val_from = f"{val_name}: all of it"
    if te is None:  # a training stream and no test data: the validation data scores
        te, test_from = va, f"{val_from}, the validation data"
    fit = Dataset.from_parts(tr, va, ds.class_names, f"{name} (train/val)", ds.preprocessing)
    test_ds = Dataset.from_parts(te, te, ds.class_names, name, ds.preprocessing)
    if model is not None:
        for part in (fit, test_ds):
            _training.check_data_fits(model, part)
    sources = {"train": f"{train_from} ({tr.describe()})",
               "validation": f"{val_from} ({va.describe()})",
               "test": f"{test_from} ({te.describe()})",
               "input": (ds.preprocessing.describe() if ds.preprocessing is not None
                         else "as the stream yields them" if streamed or is_stream(val)
                         else "images as loaded: [0, 1] from images and built-in sets")}
    return fit, test_ds, sources


def _export(model: keras.Model, path: str, mode: str, calib: Dataset, **device: Any) -> str:
    """Writes `model` as a `mode` .tflite (calibrated on `calib` where it needs data);
    `device` (target, max_flash, max_ram) goes to `to_tflite`."""
    from tfcompress.export import to_tflite
    from tfcompress.quantization import float_layer_names, is_quantize_aware

    # A quantization-aware model with float layers exports through post-training int8.
    needs_data = mode in ("int8", "int16x8") and (
        not is_quantize_aware(model) or bool(float_layer_names(model)))
    return to_tflite(model, path, mode, calib if needs_data else None, **device).path


def _measure(model: keras.Model, path: str, mode: str, calib: Dataset, test: Dataset,
             runs: int, metric: Metric, **device: Any) -> dict:
    from tfcompress import _tflite
    from tfcompress.bench import benchmark, score

    bench = benchmark(_export(model, path, mode, calib, **device), test, runs=runs,
                      threads=1, metric=metric).to_dict()
    reference, _ = score(_tflite.interpreter(path, target="litert-reference"), test, metric)
    return {"size_bytes": bench["size_bytes"], "gzip_bytes": bench["gzip_bytes"],
            "latency_ms_p50": bench["latency_ms_p50"], "latency_ms_p90": bench["latency_ms_p90"],
            "accuracy": bench["accuracy"], "accuracy_reference": reference,
            "samples": bench["num_samples"]}


_OUTPUT_NAME = re.compile(r"(\d\d_.*\.(keras|tflite|h|cc)|report\.(json|md|png)|state\.json|"
                          r"\.lock|\..*\.(keras|tflite|json|md|png))")


def is_run_output(name: str) -> bool:
    """True for the file names a run writes in its output folder."""
    return _OUTPUT_NAME.fullmatch(name) is not None


def _stderr_lines(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def compress(
    model: "keras.Model | str | os.PathLike",
    data: Any,
    recipe: "str | os.PathLike | dict | Recipe | None" = "default",
    out_dir: "str | os.PathLike" = "tfcompress-out",
    *,
    val: Any = None,
    test: Any = None,
    max_accuracy_drop: float | None = None,
    seed: int = 0,
    runs: int = 100,
    batch_size: int = 64,
    verbose: int = 0,
    progress: Any = None,
    safe_mode: bool = True,
    distribute: Any = None,
    preprocessing: Any = None,
    metric: Any = None,
) -> PipelineResult:
    """Runs a recipe on a trained model and measures every step in LiteRT.

    Each step starts from the previous step's model, fine-tunes on the training data with the
    model's compile settings, and is saved to OUT_DIR as `NN_<step>.keras` with its int8 export
    `NN_<step>.tflite` (timed and scored in LiteRT, 1 thread). The baseline row is the input
    model as float32 TFLite. A step with a `search` tries each value on the validation data
    and keeps the smallest or fastest model within the budget. `report.json`, `report.md` and
    `report.png` (accuracy against size and latency) are written at the end; `state.json` after
    every step, so a run that stops resumes after its last completed step when called again
    with the same inputs (a changed step of the recipe is redone from there on).

    Everything is checked before the first expensive step: the recipe's values, the data, and
    that OUT_DIR can be written and holds no input. OUT_DIR is locked while a run uses it. A
    run that fails before its first step is done leaves no trace (a folder it created is
    removed).

    Args:
        model: A trained Keras model or the path of a `.keras` file.
        data: Training data: `"mnist"`, `"shapes"`, an `.npz`, a folder (read a batch at a
            time), a `Dataset`, or a stream of `(x, y)` batches (`tf.data.Dataset`,
            `keras.utils.PyDataset`, a function returning batches; then `val` is needed).
            Without `test`, its test part gives the reported figures and its training part
            trains.
        recipe: A built-in name (`default`, `quick`, `lowrank`, `distill`), a YAML/JSON file, a
            dict or a `Recipe`. Defaults to `"default"`.
        out_dir: Output folder (created). Defaults to `"tfcompress-out"`.
        val: Validation data for searches: a loader source, a `Dataset` (both its parts) or
            an `(x, y)` tuple. Defaults to `None`: 10 % of the training images (stratified,
            `seed`), set aside from every step's training. If the input model was trained on
            those images, its validation accuracy is optimistic: pass held-out images.
        test: Images used for nothing but the reported figures (all of them): a loader source,
            a `Dataset` or an `(x, y)` tuple; then all of `data` trains. Defaults to `None`:
            the test part of `data`. If the model was trained on the images that score it,
            every figure against the baseline is wrong; the run warns when the baseline scores
            far higher on them than on the validation images.
        max_accuracy_drop: The budget: how much worse than the baseline the `metric` may get,
            for the searches and the verdict, in points for a percentage (top-1, top-5) and in
            the metric's own units otherwise. Defaults to `None`: 1 point (for a metric that
            is not a percentage, pass one).
        seed: Seed of the validation split and of every step. Defaults to `0`.
        runs: Timed LiteRT invocations per model. Defaults to `100`.
        batch_size: Training batch size. Defaults to `64`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        progress: A function called with one line of text per stage, or `False` for silence.
            Defaults to `None`: lines on standard error.
        safe_mode: Keras' safe mode when loading `.keras` files (the model, a recipe's student,
            resumed steps); `False` lets their Lambda layers run code. Defaults to `True`.
        distribute: Train every step on several devices: `"mirrored"`
            (`tf.distribute.MirroredStrategy` over the local GPUs, else the logical CPUs) or
            a `tf.distribute.Strategy` (e.g. `MultiWorkerMirroredStrategy` set up by
            `TF_CONFIG`). `batch_size` is then the global batch. Defaults to `None`: one
            device.
        preprocessing: What the images become for the model: `"0-1"`, `"-1-1"`, `"0-255"`
            or a `tfcompress.data.Preprocessing` (with a mean and std). Defaults to `None`:
            read from the model's first `Rescaling`/`Normalization` layer, else [0, 1]. The
            report says which was used. A stream's batches are taken as they come.
        metric: What scores every model, with the direction that is better: `"top1"`,
            `"top5"`, a Keras metric name or instance (`"mse"` for an autoencoder), or a
            `tfcompress.metrics.Metric` (e.g. `Metric(fn, direction="min")` for a function
            `fn(y_true, y_pred)`). Defaults to `None`: top-1 accuracy.

    Returns:
        A `PipelineResult`.

    Raises:
        ValueError: For a bad recipe, data that does not fit the model, a step that cannot
            apply (the message says which and why), an OUT_DIR that holds an input, another
            run's files or another running run, or a step whose training diverged.
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    say = (lambda text: None) if progress is False else (progress or _stderr_lines)
    plan = load_recipe(recipe)
    metric = as_metric(metric)
    if max_accuracy_drop is None and not metric.percent:
        raise ValueError(
            f"The metric {metric.name!r} is not a percentage, so the default budget of 1 point "
            "means nothing for it: pass max_accuracy_drop (--max-accuracy-drop) in its units, "
            f"e.g. 0.01 for a {'rise' if metric.direction == 'min' else 'fall'} of 0.01.")
    budget = 1.0 if max_accuracy_drop is None else max_accuracy_drop
    for name, value, low in (("max_accuracy_drop", budget, 0), ("runs", runs, 1),
                             ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
                name != "max_accuracy_drop" and not float(value).is_integer()):
            kind = "number" if name == "max_accuracy_drop" else "whole number"
            raise ValueError(f"{name} must be a {kind} >= {low}, got {value!r}.")
    budget = float(budget)
    devices = _distribute.replicas(distribute)  # a bad value fails here, before any work
    out = os.fspath(out_dir)
    students = [s.get("student") for s in plan.steps if s.kind == "distill"]
    recipe_file = recipe if isinstance(recipe, (str, os.PathLike)) else None
    _io.check_output_dir(out, is_run_output, model if isinstance(model, (str, os.PathLike))
                         else None, data, val, test, recipe_file, *students)
    if not isinstance(model, keras.Model):
        model = _loading.load_keras_model(model, safe_mode=safe_mode)
    fit_ds, test_ds, sources = _splits(data, val, seed, test, model, preprocessing)
    if distribute is not None:
        sources["train"] += (f", on {devices} device{'s' if devices > 1 else ''} "
                             f"({type(_distribute.strategy(distribute)).__name__})")
    _check_steps_apply(plan, model)
    _training.check_metric_fits(model, fit_ds.test, metric)
    notes = [] if not (is_stream(data) and test is None) else [
        "no test data was given with a training stream, so the validation data also gives "
        "the reported figures, after the searches chose on it: pass test= (--test) for "
        "figures nothing was chosen on."]
    identity = {"model": _io.model_fingerprint(model),
                "data": _io.fingerprint(fit_ds.train.fingerprint(), fit_ds.test.fingerprint(),
                                        test_ds.test.fingerprint()),
                "metric": metric.name,
                "seed": seed, "max_accuracy_drop": budget, "batch_size": batch_size,
                "versions": _versions()}
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    try:
        with _io.folder_lock(out):
            trace: dict = {"written": [], "steps_done": 0}
            try:
                with _distribute.scope(distribute):
                    return _run(model, plan, out, fit_ds, test_ds, sources, identity, budget,
                                seed, runs, batch_size, verbose, say, safe_mode, trace, metric,
                                notes)
            except BaseException:
                _clean_up_unfinished(out, created, trace)  # while the folder is still ours
                raise
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only if nothing is left in it
        raise


def _check_steps_apply(plan: Recipe, model: keras.Model) -> None:
    """Checks on the input model, before any work, what would otherwise fail late: a layer that
    quantization-aware training cannot handle, a target whose runtime is not installed."""
    from tfcompress._tflite import check_target

    for step in plan.steps:
        if step.kind == "export":
            check_target(step.get("target"))
    if any(step.kind == "qat" for step in plan.steps):
        from tfcompress.quantization import quantize_aware

        try:
            quantize_aware(model)
        except ValueError as e:
            raise ValueError(f"The recipe's qat step cannot apply: {e}") from None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from tfcompress import __version__

    found = {"tfcompress": __version__}
    for package in ("tensorflow", "keras"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


@contextlib.contextmanager
def _step_files(paths: list[str], index: int, done: int, out: str) -> Any:
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


def _clean_up_unfinished(out: str, created: bool, trace: dict) -> None:
    """After a failure, with the folder locked: a run that leaves no completed step behind
    removes the files it wrote (its baseline files and state), and the lock file too if it
    made the folder, which the caller then removes."""
    if trace["steps_done"]:
        return
    for path in trace["written"] + ([os.path.join(out, _io.LOCK_NAME)] if created else []):
        with contextlib.suppress(OSError):
            os.remove(path)


def _run(model: keras.Model, plan: Recipe, out: str, fit_ds: Dataset, test_ds: Dataset,
         sources: dict, identity: dict, budget: float, seed: int, runs: int, batch_size: int,
         verbose: int, say: Any, safe_mode: bool, trace: dict, metric: Metric,
         notes: list[str]) -> PipelineResult:
    """The run itself, in a locked folder; `trace` collects the files it writes before its
    first completed step and how many steps the folder holds."""
    state_path = os.path.join(out, STATE)
    state = _read_state(state_path, identity, plan, say)
    trace["steps_done"] = len(state["completed"])
    warnings: list[str] = list(state.get("warnings", []))

    def warn(text: str) -> None:
        say(f"warning: {text}")
        if text not in warnings:
            warnings.append(text)
        state["warnings"] = warnings

    for text in notes:
        warn(text)

    if state.get("baseline") is None:
        say("baseline: the input model as float32 TFLite")
        path = os.path.join(out, "00_baseline.keras")
        trace["written"] += [path, os.path.join(out, "00_baseline_float32.tflite"), state_path]
        _io.save_model_atomic(model, path)
        m = _measure(model, os.path.join(out, "00_baseline_float32.tflite"), "float32", fit_ds,
                     test_ds, runs, metric)
        samples = m.pop("samples")
        state["baseline"] = StepRecord(0, "baseline", "input model, float32", path,
                                       os.path.join(out, "00_baseline_float32.tflite"),
                                       count_params(model), delta=0.0, seconds=0.0, **m
                                       ).to_dict()
        state["baseline_val_accuracy"] = _training.evaluate(model, fit_ds.test, metric)
        if metric.classifies:
            _check_test_is_unseen(m["accuracy"], state["baseline_val_accuracy"], samples,
                                  fit_ds.test.size or samples, warn)
        _write_state(state_path, state, out)
    baseline = StepRecord(**state["baseline"])

    current = model
    records = [StepRecord(**r) for r in state["completed"]]
    if records and len(records) == len(plan.steps):
        say(f"all {len(records)} steps were completed earlier in {out}; timing and reporting")
    elif records:
        say(f"resuming after step {len(records)} ({records[-1].step})")
    if records and len(records) < len(plan.steps):
        current = _loading.load_keras_model(records[-1].model_path, safe_mode=safe_mode)
    for index, step in enumerate(plan.steps, start=1):
        if index <= len(records):
            continue
        say(f"[{index}/{len(plan.steps)}] {step.describe()}")
        start = time.perf_counter()
        stem = os.path.join(out, f"{index:02d}_{step.kind}")
        search = None
        skipped = None
        info: dict = {}
        with _seeded(seed + index):
            if step.kind == "export":
                mode = step.get("mode")
                tflite = f"{stem}_{mode}.tflite"
                new = current
            else:
                tflite = f"{stem}_int8.tflite"
                if step.search is not None:
                    outcome, search = _search(step, current, fit_ds, state, budget, batch_size,
                                              verbose, runs, out, index, say, safe_mode,
                                              metric, plan.device_limits())
                    if not any(row["within_budget"] for row in search):
                        warn(f"step {index} ({step.kind}): no searched value of "
                             f"{SEARCHED[step.kind]} is within the budget of {budget:g} "
                             f"{metric.unit or metric.name} on the validation data; kept the "
                             "best scoring "
                             f"({outcome.info['chosen']}).")
                else:
                    outcome = _steps.run(step, current, fit_ds, batch_size, verbose, safe_mode,
                                         metric)
                new, info, skipped = outcome.model, outcome.info, outcome.skipped
                mode = "int8"
        if skipped:
            say(f"  skipped: {skipped}")
        model_path = f"{stem}.keras"
        with _step_files([model_path, tflite], index, len(state["completed"]), out):
            _io.save_model_atomic(new, model_path)
            device = {}
            if step.kind == "export":
                device = {k: step.get(k) for k in ("target", "max_flash", "max_ram")}
                float_layers = step.get("float_layers")
                if float_layers == "auto":  # a quantize scan on the validation data picks them
                    from tfcompress.debug import sensitivity

                    scan = sensitivity(new, fit_ds, "quantize", metric=metric)
                    float_layers = scan.float_layers(budget=budget / (100 if metric.percent else 1))
                    info["sensitivity"] = scan.to_dict()
                    say(f"  kept in float: {', '.join(float_layers) or 'none (within budget)'}")
                if float_layers:
                    device["float_layers"] = float_layers
                    info["float_layers"] = list(float_layers)
            m = _measure(new, tflite, mode, fit_ds, test_ds, runs, metric, **device)
        m.pop("samples")
        description = step.describe()
        if search is not None:
            chosen = step.with_setting(SEARCHED[step.kind], info["chosen"])
            description = f"{chosen.describe()}, searched"
        if step.kind == "prune" and "sparsity_after" in info:
            description += f"; reached sparsity {info['sparsity_after']:.3f}"
        record = StepRecord(index, step.kind, description, model_path, tflite,
                            count_params(new),
                            delta=round(metric.display(m["accuracy"])
                                        - metric.display(baseline.accuracy), 2 + 2 * (
                                            not metric.percent)),
                            seconds=round(time.perf_counter() - start, 1), skipped=skipped,
                            info=_jsonable(info), search=search, **m)
        records.append(record)
        state["completed"].append(record.to_dict())
        _write_state(state_path, state, out)
        trace["steps_done"] = len(state["completed"])
        current = new
        say(f"  {record.params:,} params, {record.size_bytes:,} bytes, p50 "
            f"{record.latency_ms_p50:.3f} ms, {_metric_words(metric)} "
            f"{metric.format(record.accuracy)} ({record.delta:+.4g} {metric.unit or 'change'})")

    side_by_side = None
    if records:  # the headline speed-up: both files timed in turns, so load hits both alike
        from tfcompress.bench import time_side_by_side

        say("timing the baseline and the final model side by side")
        pair = time_side_by_side([baseline.tflite_path, records[-1].tflite_path], test_ds,
                                 runs=2 * runs)
        side_by_side = {"baseline_ms_p50": float(np.percentile(pair[0], 50)),
                        "final_ms_p50": float(np.percentile(pair[1], 50)), "runs": 2 * runs}
        # One baseline latency and one final latency in every report: the side-by-side ones.
        baseline = _retimed(baseline, pair[0])
        records[-1] = _retimed(records[-1], pair[1])
    result = PipelineResult(plan.to_dict(), test_ds.name, seed, baseline, tuple(records),
                            budget, out, side_by_side, sources, tuple(warnings),
                            metric.to_dict())
    if not result.meets_budget:
        unit = metric.unit or metric.name
        say(f"the final model is {result.worse_by:.4g} {unit} worse than the baseline: it does "
            f"NOT meet the budget of {budget:g} {unit}")
    from tfcompress.pipeline._report import write_reports

    write_reports(result)
    return result


def _metric_words(metric: Metric) -> str:
    return "accuracy" if metric.name == "top1" else metric.name


def _retimed(record: StepRecord, times: np.ndarray) -> StepRecord:
    return replace(record, latency_ms_p50=float(np.percentile(times, 50)),
                   latency_ms_p90=float(np.percentile(times, 90)))


def _check_test_is_unseen(test_acc: float, val_acc: float, n_test: int, n_val: int,
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


def _search(step: Step, model: keras.Model, fit_ds: Dataset, state: dict, budget: float,
            batch_size: int, verbose: int, runs: int, out: str, index: int,
            say: Any, safe_mode: bool, metric: Metric, plan_limits: dict | None = None
            ) -> tuple[_steps.Outcome, list]:
    """Tries each searched value; keeps the best within budget on the validation data (and,
    with `plan_limits`, within the microcontroller's flash and RAM)."""
    key = SEARCHED[step.kind]
    base_val = state["baseline_val_accuracy"]
    candidates = []
    started = time.perf_counter()
    for n, value in enumerate(step.search.values):
        left = ""
        if n:
            each = (time.perf_counter() - started) / n
            left = f", about {each * (len(step.search.values) - n):.0f} s left for the search"
        say(f"  trying {shown_name(key)}={value} ({n + 1} of {len(step.search.values)}{left})")
        outcome = _steps.run(step.with_setting(key, value), model, fit_ds, batch_size, verbose,
                             safe_mode, metric)
        val_acc = _training.evaluate(outcome.model, fit_ds.test, metric)
        path = _export(outcome.model, os.path.join(out, f"{index:02d}_{step.kind}_search_{value}"
                                                   ".tflite"), "int8", fit_ds)
        fits = _fits_device(path, plan_limits)
        candidates.append((value, outcome, val_acc, path, fits))
    if step.search.objective == "latency":  # side by side: a passing load hits all alike
        from tfcompress.bench import time_side_by_side

        times = time_side_by_side([c[3] for c in candidates], fit_ds, runs=max(20, runs // 2))
        objectives = [float(np.percentile(t, 50)) for t in times]
    else:
        objectives = [os.path.getsize(c[3]) for c in candidates]
    tried = []
    best = None
    for (value, outcome, val_acc, path, fits), objective in zip(candidates, objectives,
                                                                strict=True):
        os.remove(path)
        ok = metric.worse_by(val_acc, base_val) <= budget + 1e-9 and fits is None
        row = {key: value, "val_accuracy": val_acc, "within_budget": ok,
               step.search.objective: objective}
        if plan_limits:
            row["fits_device"] = fits is None
        tried.append(row)
        device = "" if not plan_limits else (", fits the device" if fits is None else
                                             f", does not fit the device: {fits}")
        say(f"  search {shown_name(key)}={value}: validation {_metric_words(metric)} "
            f"{metric.format(val_acc)} "
            f"({'within' if ok else 'outside'} budget), {step.search.objective} {objective:.4g}"
            f"{device}")
        rank = (not ok, objective if ok else metric.worse_by(val_acc, base_val))
        if best is None or rank < best[0]:
            best = (rank, value, outcome)
    _, value, outcome = best
    for row in tried:
        row["chosen"] = row[key] == value
    outcome.info = {**outcome.info, "searched": key, "chosen": value}
    return outcome, tried


def _fits_device(path: str, limits: dict | None) -> str | None:
    """None when the int8 file fits the flash and RAM `limits` in TFLite Micro, else why not."""
    if not limits:
        return None
    from tfcompress.export._micro import measure

    with open(path, "rb") as f:
        content = f.read()
    try:
        measure(content, limits["max_flash"], limits["max_ram"])
    except ValueError as e:
        return str(e).split(". Nothing was written")[0]
    return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: str(o)))


def _read_state(path: str, identity: dict, plan: Recipe, say: Any) -> dict:
    """The state of the run in this folder, checked against this run's inputs.

    A changed input model, data, seed, budget, batch size or library version is an error, and
    so is a changed recipe after a finished run. An unfinished run (stopped, or failed in a
    step) resumed with a changed recipe keeps the completed steps the new recipe still starts
    with and redoes the rest.
    """
    out = os.path.dirname(path) or "."
    fresh = {**identity, "recipe": plan.to_dict(), "baseline": None, "completed": []}
    if not os.path.exists(path):
        return fresh
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable tfcompress state file ({e}). Delete it, or "
                         "choose another output folder.") from None
    if not isinstance(state, dict) or not isinstance(state.get("completed"), list) or (
            "baseline" not in state):
        raise ValueError(f"{path} is not a tfcompress state file. Delete it, or choose another "
                         "output folder.")
    records = state["completed"] + ([] if state["baseline"] is None else [state["baseline"]])
    broken = next((r for r in records if _record_problem(r)), None)
    if broken is not None:
        raise ValueError(f"{path} is damaged: a step record {_record_problem(broken)}. Delete "
                         "the folder to start over, or choose another output folder.")
    if not state["completed"]:  # nothing worth keeping: start over
        return fresh
    for key, value in identity.items():
        if state.get(key) != value:
            raise ValueError(
                f"{out} holds a run with a different {_IDENTITY_WORDS[key]} "
                f"({_describe(key, state.get(key), value)}). Delete the folder to start over, "
                "choose another output folder, or run with the inputs it was made from to "
                "resume.")
    old_steps = state.get("recipe", {}).get("steps", [])
    if old_steps != plan.to_dict()["steps"] and len(state["completed"]) >= len(old_steps):
        raise ValueError(
            f"{out} holds a finished run of a different recipe "
            f"({state.get('recipe', {}).get('name')!r}). Delete the folder or choose another "
            "output folder; tfcompress does not replace finished results.")
    kept = 0
    for old, new in zip(old_steps, plan.to_dict()["steps"], strict=False):
        if old != new or kept >= len(state["completed"]):
            break
        kept += 1
    if kept < len(state["completed"]):
        say(f"the recipe differs from step {kept + 1} on: keeping {kept} completed step(s), "
            "redoing the rest")
    def inside(record: dict) -> dict:
        return _with_paths(record, lambda p: os.path.join(out, p))

    state["completed"] = [inside(r) for r in state["completed"][:kept]]
    state["baseline"] = inside(state["baseline"])
    state["recipe"] = plan.to_dict()
    return state


_IDENTITY_WORDS = {"model": "input model (its architecture or weights)",
                   "data": "data (the images or labels)", "seed": "seed",
                   "max_accuracy_drop": "accuracy budget", "batch_size": "batch size",
                   "metric": "metric",
                   "versions": "library version"}


def _describe(key: str, old: Any, new: Any) -> str:
    if key == "data":
        return (f"content fingerprint {old} then, {new} now; a stream is identified by every "
                "sample it yields, so one that augments at random differs on every read")
    if key == "model":
        return f"content fingerprint {old} then, {new} now"
    return f"{old!r} then, {new!r} now"


def _record_problem(record: Any) -> str | None:
    """What makes a saved step record unreadable (a missing or unknown key), or None."""
    import dataclasses

    if not isinstance(record, dict):
        return f"is a {type(record).__name__}, not an object"
    fields = dataclasses.fields(StepRecord)
    missing = [f.name for f in fields if f.default is dataclasses.MISSING
               and f.name not in record]
    unknown = sorted(set(record) - {f.name for f in fields})
    if missing:
        return f"lacks {', '.join(missing)}"
    if unknown:
        return f"has unknown keys {', '.join(unknown)}"
    if not all(isinstance(record[k], str) for k in ("model_path", "tflite_path")):
        return "has file paths that are not text"
    return None


def _with_paths(record: dict, convert: Any) -> dict:
    """A step record with its two file paths converted (to or from relative to OUT)."""
    return {**record, "model_path": convert(record["model_path"]),
            "tflite_path": convert(record["tflite_path"])}


def _write_state(path: str, state: dict, out: str) -> None:
    """Writes the state with every file path relative to the output folder, so the folder
    can be moved or resumed from anywhere."""
    def rel(record: dict) -> dict:
        return _with_paths(record, lambda p: os.path.relpath(p, out))

    saved = {**state, "baseline": rel(state["baseline"]),
             "completed": [rel(r) for r in state["completed"]]}
    _io.write_text_atomic(path, json.dumps(saved, indent=2))
