"""`compress`: a recipe's steps run on a model, each measured in LiteRT against the float32
baseline, resumable, in one output folder. The parts live beside this module: the run and
its state file (`_state`), the data splits (`_data`), one step's execution (`_execute`),
searches (`_search`), records (`_records`) and reports (`_report`)."""

import contextlib
import os
import sys
from typing import Any

import keras
import numpy as np

from tfcompress import _distribute, _io, _legacy, _loading, _targets, _training
from tfcompress.data._parts import is_stream
from tfcompress.metrics import Metric, as_metric
from tfcompress.pipeline._data import splits
from tfcompress.pipeline._execute import measure_baseline, run_step
from tfcompress.pipeline._recipe import Recipe, load_recipe
from tfcompress.pipeline._records import PipelineResult, StepRecord, retimed
from tfcompress.pipeline._state import Run, clean_up_unfinished, is_run_output, versions

__all__ = ["PipelineResult", "StepRecord", "compress", "is_run_output"]


def _stderr_lines(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def compress(
    model: "keras.Model | str | os.PathLike",
    data: Any,
    recipe: "str | os.PathLike | dict | Recipe | None" = "auto",
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
    target: str | None = None,
    device: dict | None = None,
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
        recipe: A built-in name (`auto`, `default`, `quick`, `lowrank`, `distill`), a
            YAML/JSON file, a dict or a `Recipe`. Defaults to `"auto"`: steps chosen from the
            model and the data, each within its share of the budget (the report says which
            and why).
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
            `"top5"`, `"map50"`/`"map"` for a detector, a Keras metric name or instance
            (`"mse"` for an autoencoder), or a `tfcompress.metrics.Metric` (e.g.
            `Metric(fn, direction="min")` for a function `fn(y_true, y_pred)`). Defaults to
            `None`: top-1 accuracy, or mAP@0.5 (`map50`) for a detector (a model that
            carries `tfcompress.detection.Anchors`).
        target: Where the final file runs, as `to_tflite` takes it (`"tflm"`,
            `"ethos-u55-128"`...): the recipe's export step is made for it. With a device
            target that has budgets (`device`), every search keeps only models that fit
            them; with an Arm Ethos-U target, the searches also rank by Vela's estimated
            latency, the layers that would run on the NPU's CPU are named before any
            training, and the report compares the input model's dense int8 file with the
            final one on the NPU. Defaults to `None`: the recipe's own (`litert`).
        device: The export's device settings, as `to_tflite` takes them: `max_flash`,
            `max_ram` (tflm); `max_latency_ms`, `max_sram`, `max_flash`, `system_config`,
            `memory_mode`, `allow_cpu_ops` (Ethos-U). Defaults to `None`.

    Returns:
        A `PipelineResult`.

    Raises:
        ValueError: For a bad recipe, data that does not fit the model, a step that cannot
            apply (the message says which and why), an OUT_DIR that holds an input, another
            run's files or another running run, or a step whose training diverged.
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    asked, plan, metric = metric, load_recipe(recipe), as_metric(metric)
    if not plan.is_auto:
        plan = plan.for_target(target, device)
    else:
        plan.for_target(target, device)  # checked now; applied to the recipe auto makes
    budget = _check_numbers(metric, max_accuracy_drop, runs, batch_size, seed)
    devices = _distribute.replicas(distribute)  # a bad value fails here, before any work
    out = os.fspath(out_dir)
    students = [s.get("student") for s in plan.steps if s.kind == "distill"]
    recipe_file = recipe if isinstance(recipe, (str, os.PathLike)) else None
    _io.check_output_dir(out, is_run_output, model if isinstance(model, (str, os.PathLike))
                         else None, data, val, test, recipe_file, *students)
    if not isinstance(model, keras.Model):
        model = _loading.load_keras_model(model, safe_mode=safe_mode)
    if asked is None and _training.is_detector(model):
        metric = as_metric("map50")  # a detector is judged by its boxes
    fit_ds, test_ds, sources = splits(data, val, seed, test, model, preprocessing)
    if distribute is not None:
        sources["train"] += (f", on {devices} device{'s' if devices > 1 else ''} "
                             f"({type(_distribute.strategy(distribute)).__name__})")
    _training.check_metric_fits(model, fit_ds.test, metric)
    metric = metric.for_model(model)  # a detection metric decodes against the model's anchors
    if plan.is_auto:  # made from this model and these data
        from tfcompress.pipeline._auto import auto_recipe

        plan = auto_recipe(model, fit_ds, batch_size).for_target(target, device)
    _check_steps_apply(plan, model)
    notes = [] if not (is_stream(data) and test is None) else [
        "no test data was given with a training stream, so the validation data also gives "
        "the reported figures, after the searches chose on it: pass test= (--test) for "
        "figures nothing was chosen on."]
    identity = {"model": _io.model_fingerprint(model),
                "data": _io.fingerprint(fit_ds.train.fingerprint(), fit_ds.test.fingerprint(),
                                        test_ds.test.fingerprint()),
                "metric": metric.name,
                "seed": seed, "max_accuracy_drop": budget, "batch_size": batch_size,
                "versions": versions()}
    say = (lambda text: None) if progress is False else (progress or _stderr_lines)
    run = Run(out, plan, fit_ds, test_ds, sources, identity, budget, metric, seed, runs,
              batch_size, verbose, say, safe_mode, notes)
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    try:
        with _io.folder_lock(out):
            try:
                with _distribute.scope(distribute):
                    return _run(run, model)
            except BaseException:
                clean_up_unfinished(out, created, run.trace)  # while the folder is still ours
                raise
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only if nothing is left in it
        raise


def _check_numbers(metric: Metric, max_accuracy_drop: Any, runs: Any, batch_size: Any,
                   seed: Any) -> float:
    """The budget in force, after checking it and the counts (one line for a bad value)."""
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
    return float(budget)


def _check_steps_apply(plan: Recipe, model: keras.Model) -> None:
    """Checks on the input model, before any work, what would otherwise fail late: a layer that
    quantization-aware training cannot handle, a target whose runtime is not installed."""
    from tfcompress._tflite import check_target

    for step in plan.steps:
        if step.kind == "export":
            check_target(step.get("target"))
            if _targets.is_npu(step.get("target")):
                from tfcompress import _vela

                _vela.check(step.get("target"), step.get("system_config"),
                            step.get("memory_mode"))
    if any(step.kind == "qat" for step in plan.steps):
        from tfcompress.quantization import quantize_aware

        try:
            quantize_aware(model)
        except ValueError as e:
            raise ValueError(f"The recipe's qat step cannot apply: {e}") from None


def _run(run: Run, model: keras.Model) -> PipelineResult:
    """The run itself, in a locked folder: the baseline once, then every step not completed
    yet, then the side-by-side timing and the reports."""
    run.load_state()
    run.teacher = model
    for choice in run.plan.choices:
        run.say(f"{run.plan.name}: {choice}")
    npu = _npu_settings(run.plan)
    if run.state.get("baseline") is None:
        if npu is not None:
            _npu_preview(run, model, npu)
        measure_baseline(run, model)
    baseline = StepRecord(**run.state["baseline"])
    records = [StepRecord(**r) for r in run.state["completed"]]
    steps = run.plan.steps
    current = model
    if records and len(records) == len(steps):
        run.say(f"all {len(records)} steps were completed earlier in {run.out}; timing and "
                "reporting")
    elif records:
        run.say(f"resuming after step {len(records)} ({records[-1].step})")
        current = _loading.load_keras_model(records[-1].model_path, safe_mode=run.safe_mode)
    for index, step in enumerate(steps[len(records):], start=len(records) + 1):
        record, current = run_step(run, index, step, current, baseline)
        records.append(record)
    npu_summary = _npu_summary(run, model, npu, records) if npu is not None else None
    return _finish(run, baseline, records, npu_summary)


def _npu_settings(plan: Recipe) -> dict | None:
    """The export step's Ethos-U target and the settings it was given, or None for another
    target."""
    limits = plan.device_limits()
    if limits is None or not _targets.is_npu(limits["target"]):
        return None
    return {k: v for k, v in limits.items() if v not in (None, False)}


def _npu_preview(run: Run, model: keras.Model, npu: dict) -> None:
    """Before any training: the layers whose ops Vela would leave to the CPU, warned about
    unless the recipe allows CPU ops."""
    from tfcompress.export._npu import preview

    try:
        report = preview(model, npu["target"], npu.get("system_config"), npu.get("memory_mode"))
    except ValueError as e:
        run.warn(f"could not check which layers map to the NPU {npu['target']}: {e}")
        return
    run.say(f"{npu['target']}: {len(report.ops) - len(report.cpu_ops)} of {len(report.ops)} "
            f"ops of the input model's int8 file map to the NPU ({report.configuration()})")
    if report.cpu_ops and not npu.get("allow_cpu_ops"):
        layers = "; ".join(f"{o.layer} ({o.op}: {o.reason})" for o in report.cpu_ops)
        run.warn(f"on {npu['target']}, these layers would run on the CPU, and the export "
                 f"refuses them unless the recipe's export allows CPU ops: {layers}")


def _npu_summary(run: Run, model: keras.Model, npu: dict, records: list[StepRecord]
                 ) -> dict | None:
    """The input model's dense int8 file against the final one on the NPU, as Vela
    estimates them (the final file's figures come from its export)."""
    from tfcompress.pipeline._measure import export_report, npu_figures

    final = records[-1].npu if records else None
    if final is None:
        return None
    run.say(f"compiling the input model's int8 file for {npu['target']} to compare")
    options = {k: npu[k] for k in ("system_config", "memory_mode") if k in npu}
    with _io.scratch_folder(run.out, ".tfcompress-npu-") as tmp:
        try:
            base = npu_figures(export_report(
                model, os.path.join(tmp, "baseline_int8.tflite"), "int8", run.fit_ds,
                target=npu["target"], allow_cpu_ops=True, **options))
        except ValueError as e:
            run.warn(f"the input model's int8 file could not be compiled for "
                     f"{npu['target']} to compare: {e}")
            return None
    summary = {"target": npu["target"], "baseline_int8": base, "final": final,
               "faster": round(base["inference_ms"] / final["inference_ms"], 2),
               "smaller": round(base["model_bytes"] / final["model_bytes"], 2)}
    run.say(f"on {npu['target']} (Vela's estimate): {base['inference_ms']:.3f} ms -> "
            f"{final['inference_ms']:.3f} ms per inference ({summary['faster']:.2f}x faster), "
            f"compiled model {summary['smaller']:.2f}x smaller")
    return summary


def _finish(run: Run, baseline: StepRecord, records: list[StepRecord],
            npu: dict | None = None) -> PipelineResult:
    """Times the baseline and the final file side by side (the headline speed-up), then
    writes the reports and says the budget's verdict."""
    side_by_side = None
    if records:  # both files timed in turns, so a passing load hits both alike
        from tfcompress.bench import time_side_by_side

        run.say("timing the baseline and the final model side by side")
        pair = time_side_by_side([baseline.tflite_path, records[-1].tflite_path], run.test_ds,
                                 runs=2 * run.runs)
        side_by_side = {"baseline_ms_p50": float(np.percentile(pair[0], 50)),
                        "final_ms_p50": float(np.percentile(pair[1], 50)), "runs": 2 * run.runs}
        # One baseline latency and one final latency in every report: the side-by-side ones.
        baseline = retimed(baseline, pair[0])
        records[-1] = retimed(records[-1], pair[1])
    metric, budget = run.metric, run.budget
    result = PipelineResult(run.plan.to_dict(), run.test_ds.name, run.seed, baseline,
                            tuple(records), budget, run.out, side_by_side, run.sources,
                            tuple(run.state.get("warnings", [])), metric.to_dict(), npu)
    if not result.meets_budget:
        unit = metric.unit or metric.name
        run.say(f"the final model is {result.worse_by:.4g} {unit} worse than the baseline: it "
                f"does NOT meet the budget of {budget:g} {unit}")
    from tfcompress.pipeline._report import write_reports

    write_reports(result)
    return result



