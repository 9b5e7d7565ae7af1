"""A step's search: each value tried on the validation data, the best within the budget (and
the device's flash and RAM) kept, ranked by size or by latency timed side by side."""

import os
import time

import keras
import numpy as np

from tfcompress import _training
from tfcompress.pipeline import _steps
from tfcompress.pipeline._measure import export_file, metric_words
from tfcompress.pipeline._recipe import SEARCHED, Step, shown_name
from tfcompress.pipeline._state import Run


def search(run: Run, step: Step, model: keras.Model, index: int
           ) -> tuple[_steps.Outcome, list]:
    """Tries each searched value; keeps the best within budget on the validation data (and,
    with the recipe's device limits, within the microcontroller's flash and RAM)."""
    fit_ds, budget, metric, say, runs = run.fit_ds, run.budget, run.metric, run.say, run.runs
    plan_limits = run.plan.device_limits()
    key = SEARCHED[step.kind]
    base_val = run.state["baseline_val_accuracy"]
    candidates = []
    started = time.perf_counter()
    for n, value in enumerate(step.search.values):
        left = ""
        if n:
            each = (time.perf_counter() - started) / n
            left = f", about {each * (len(step.search.values) - n):.0f} s left for the search"
        say(f"  trying {shown_name(key)}={value} ({n + 1} of {len(step.search.values)}{left})")
        outcome = _steps.run(step.with_setting(key, value), model, fit_ds, run.batch_size,
                             run.verbose, run.safe_mode, metric)
        val_acc = _training.evaluate(outcome.model, fit_ds.test, metric)
        path = export_file(outcome.model, run.path(f"{index:02d}_{step.kind}_search_{value}"
                                                   ".tflite"), "int8", fit_ds)
        fits = fits_device(path, plan_limits)
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
        say(f"  search {shown_name(key)}={value}: validation {metric_words(metric)} "
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


def fits_device(path: str, limits: dict | None) -> str | None:
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
