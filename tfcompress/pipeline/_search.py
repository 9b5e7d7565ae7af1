"""A step's search on the validation data: back-off (bisection from the most compressed value
towards none) or every value ranked by size or by latency (timed side by side, or Vela's
estimate for an Ethos-U target); only values within the step's share of the budget (and the
device's budgets) can be kept, and a step with none is skipped."""

import math
import os
import time
from typing import Any

import keras
import numpy as np

from tfcompress import _io, _targets, _training
from tfcompress.pipeline import _steps
from tfcompress.pipeline._measure import export_file, export_report, metric_words
from tfcompress.pipeline._recipe import SEARCHED, Step, shown_name
from tfcompress.pipeline._state import Run


def search(run: Run, step: Step, model: keras.Model, index: int
           ) -> tuple[_steps.Outcome, list]:
    """Tries the searched values on the validation data and keeps, among those within the
    step's share of the budget (and, with the recipe's device limits, within the
    microcontroller's flash and RAM), the most compressed (`backoff`: values listed most
    compressed first, tried by bisection) or the smallest or fastest (`all`). When none is
    within, the outcome is the model unchanged, skipped, with the reason."""
    if step.search.strategy == "backoff":
        return _backoff(run, step, model, index)
    return _all(run, step, model, index)


def _try(run: Run, step: Step, model: keras.Model, index: int, value: Any, n: int,
         total: str, started: float) -> tuple:
    """One searched value: its outcome, its validation score, and whether that is within the
    step's share of the budget (a step that skipped itself never is)."""
    key = SEARCHED[step.kind]
    left = ""
    if n:
        each = (time.perf_counter() - started) / n
        left = f", about {each:.0f} s per value"
    run.say(f"  trying {shown_name(key)}={value} ({n + 1} of {total}{left})")
    outcome = _steps.run(step.with_setting(key, value), model, run.fit_ds, run.batch_size,
                         run.verbose, run.safe_mode, run.metric, run.teacher)
    val = _training.evaluate(outcome.model, run.fit_ds.test, run.metric)
    limit = run.limit(index)
    ok = outcome.skipped is None and run.metric.worse_by(
        val, run.state["baseline_val_accuracy"]) <= limit + 1e-9
    return outcome, val, ok


def _backoff(run: Run, step: Step, model: keras.Model, index: int
             ) -> tuple[_steps.Outcome, list]:
    key, values = SEARCHED[step.kind], list(step.search.values)
    plan_limits = run.plan.device_limits()
    tried: dict[int, tuple] = {}
    lo, hi = 0, len(values) - 1  # the most compressed value within lies in [lo, hi]
    best = None
    started = time.perf_counter()
    total = f"at most {max(1, math.ceil(math.log2(len(values) + 1)))}"
    while lo <= hi:
        mid = (lo + hi) // 2
        outcome, val, ok = _try(run, step, model, index, values[mid], len(tried), total,
                                started)
        fits, npu = None, None
        if ok and plan_limits:
            fits, npu = on_device(run, outcome.model, plan_limits)
            ok = fits is None
        tried[mid] = (val, ok, fits, npu)
        _say_tried(run, key, values[mid], val, ok, index, fits, plan_limits, npu=npu)
        if ok:
            best, hi = (mid, outcome), mid - 1
        else:
            lo = mid + 1
    rows = [_row(key, values[i], *tried[i][:3], plan_limits, **_npu_row(tried[i][3]))
            for i in sorted(tried)]
    return _kept(run, step, model, index, rows,
                 None if best is None else (values[best[0]], best[1]))


def _all(run: Run, step: Step, model: keras.Model, index: int
         ) -> tuple[_steps.Outcome, list]:
    fit_ds, runs = run.fit_ds, run.runs
    plan_limits = run.plan.device_limits()
    key = SEARCHED[step.kind]
    candidates = []
    started = time.perf_counter()
    for n, value in enumerate(step.search.values):
        outcome, val, ok = _try(run, step, model, index, value, n,
                                str(len(step.search.values)), started)
        path = export_file(outcome.model, run.path(f"{index:02d}_{step.kind}_search_{value}"
                                                   ".tflite"), "int8", fit_ds)
        fits, npu = on_device(run, outcome.model, plan_limits) if plan_limits else (None, None)
        candidates.append((value, outcome, val, ok and fits is None, path, fits, npu))
    on_npu = plan_limits is not None and _targets.is_npu(plan_limits["target"])
    if step.search.objective == "latency" and on_npu:  # the NPU's time, as Vela estimates it
        objectives = [c[6]["inference_ms"] if c[6] else math.inf for c in candidates]
    elif step.search.objective == "latency":  # side by side: a passing load hits all alike
        from tfcompress.bench import time_side_by_side

        times = time_side_by_side([c[4] for c in candidates], fit_ds, runs=max(20, runs // 2))
        objectives = [float(np.percentile(t, 50)) for t in times]
    else:
        objectives = [os.path.getsize(c[4]) for c in candidates]
    tried = []
    best = None
    for (value, outcome, val, ok, path, fits, npu), objective in zip(candidates, objectives,
                                                                      strict=True):
        os.remove(path)
        tried.append(_row(key, value, val, ok, fits, plan_limits,
                          **{step.search.objective: objective}, **_npu_row(npu)))
        _say_tried(run, key, value, val, ok, index, fits, plan_limits,
                   f", {step.search.objective} {objective:.4g}", npu=npu)
        if ok and (best is None or objective < best[0]):
            best = (objective, value, outcome)
    return _kept(run, step, model, index, tried, None if best is None else best[1:])


def _row(key: str, value: Any, val: float, ok: bool, fits: str | None,
         plan_limits: dict | None, **extra: Any) -> dict:
    """A searched value's row in the report: its validation score, whether it was within
    the step's share (and the device), and what else its search measured."""
    row = {key: value, "val_accuracy": val, "within_budget": ok, **extra}
    if plan_limits:
        row["fits_device"] = fits is None
    return row


def _kept(run: Run, step: Step, model: keras.Model, index: int, rows: list,
          chosen: tuple | None) -> tuple[_steps.Outcome, list]:
    """The search's outcome: the `(value, outcome)` chosen, marked in `rows`, or the model
    unchanged and the step skipped when none was within its share."""
    key = SEARCHED[step.kind]
    for row in rows:
        row["chosen"] = chosen is not None and row[key] == chosen[0]
    if chosen is None:
        return _none_within(run, step, model, index), rows
    value, outcome = chosen
    outcome.info = {**outcome.info, "searched": key, "chosen": value}
    return outcome, rows


def _npu_row(npu: dict | None) -> dict:
    return {} if not npu else {"npu_ms": npu["inference_ms"], "npu_sram_bytes": npu["sram_bytes"],
                               "npu_model_bytes": npu["model_bytes"]}


def _say_tried(run: Run, key: str, value: Any, val: float, ok: bool, index: int,
               fits: str | None, plan_limits: dict | None, extra: str = "",
               npu: dict | None = None) -> None:
    device = "" if not plan_limits else (", fits the device" if fits is None else
                                         f", does not fit the device: {fits}")
    if npu:
        device += f" (NPU estimate {npu['inference_ms']:.3f} ms)"
    worse = run.metric.worse_by(val, run.state["baseline_val_accuracy"])
    change = f"{_points(run, abs(worse))} {'worse' if worse > 0 else 'better'}" if worse \
        else "as the baseline"
    run.say(f"  search {shown_name(key)}={value}: validation {metric_words(run.metric)} "
            f"{run.metric.format(val)} ({change}; "
            f"{'within' if ok else 'outside'} the step's share, "
            f"{_points(run, run.limit(index))}){extra}{device}")


def _points(run: Run, value: float) -> str:
    return f"{value:.3g} {run.metric.unit or run.metric.name}"


def _none_within(run: Run, step: Step, model: keras.Model, index: int) -> _steps.Outcome:
    key = SEARCHED[step.kind]
    reason = (f"no value of {shown_name(key)} keeps the model within this step's share of the "
              f"budget ({_points(run, run.limit(index))} below the baseline on the "
              "validation data)")
    return _steps.Outcome(model, {"searched": key, "chosen": None}, skipped=reason)


def on_device(run: Run, model: keras.Model, limits: dict) -> tuple[str | None, dict | None]:
    """Exports `model` as the recipe's export step would for its device target (in a scratch
    folder, then removed): why it does not fit the device's budgets (None when it fits), and,
    for an Ethos-U target, Vela's figures."""
    from tfcompress.pipeline._measure import npu_figures

    options = {k: v for k, v in limits.items() if k != "target" and v not in (None, False)}
    npu = _targets.is_npu(limits["target"])
    budgets = {k: options.pop(k) for k in list(options) if npu and k not in (
        "system_config", "memory_mode")}  # checked below, so that a miss keeps its figures
    report = None
    with _io.scratch_folder(run.out, ".tfcompress-search-") as tmp:
        try:
            report = export_report(model, os.path.join(tmp, "candidate.tflite"), "int8",
                                   run.fit_ds, target=limits["target"],
                                   **({"allow_cpu_ops": True} if npu else {}), **options)
            if npu:
                from tfcompress.export._npu import check

                check(report.npu, **budgets)
        except ValueError as e:
            return str(e).split(". Nothing was written")[0], npu_figures(report)
    return None, npu_figures(report)
