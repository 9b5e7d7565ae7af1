"""`compress`: run a recipe on a trained model, measure each step in LiteRT, resume after a stop."""

import contextlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from tfcompress import _io, _training
from tfcompress.data import Dataset, as_arrays, load
from tfcompress.pipeline import _steps
from tfcompress.pipeline._recipe import SEARCHED, Recipe, Step, load_recipe
from tfcompress.quantization import count_params

STATE = "state.json"


@dataclass(frozen=True)
class StepRecord:
    """One row of the report: a step's model, its int8 (or final) TFLite file and measurements.

    Accuracy is measured in LiteRT on the test split; `delta` is in points against the
    baseline (the input model as float32 TFLite).
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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PipelineResult:
    """Everything a `compress` run measured; also written to OUT_DIR/report.json."""

    recipe: dict
    data: str
    seed: int
    baseline: StepRecord
    steps: tuple[StepRecord, ...]
    max_accuracy_drop: float | None
    out_dir: str
    side_by_side: dict | None = None

    @property
    def final(self) -> StepRecord:
        return self.steps[-1] if self.steps else self.baseline

    @property
    def meets_budget(self) -> bool | None:
        if self.max_accuracy_drop is None:
            return None
        return -self.final.delta <= self.max_accuracy_drop + 1e-9

    def ratios(self) -> dict:
        """Final vs baseline: how many times smaller on disk and gzipped, and faster (p50;
        from the two files timed side by side at the end of the run, where they were)."""
        b, f = self.baseline, self.final
        pair = self.side_by_side or {"baseline_ms_p50": b.latency_ms_p50,
                                     "final_ms_p50": f.latency_ms_p50}
        return {"smaller": round(b.size_bytes / f.size_bytes, 2),
                "smaller_gzip": round(b.gzip_bytes / f.gzip_bytes, 2),
                "faster_p50": round(pair["baseline_ms_p50"] / pair["final_ms_p50"], 2)}

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "data": self.data, "seed": self.seed,
                "baseline": self.baseline.to_dict(),
                "steps": [s.to_dict() for s in self.steps],
                "final": self.final.to_dict(), "ratios": self.ratios(),
                "side_by_side": self.side_by_side,
                "max_accuracy_drop": self.max_accuracy_drop, "meets_budget": self.meets_budget}


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


def _splits(data: Any, val: Any, seed: int) -> tuple[Dataset, Dataset]:
    """(train + validation as a Dataset whose test part is the validation set, test Dataset)."""
    ds = load(data, seed=seed)
    if val is None:
        rest, (x_val, y_val) = ds.hold_out(seed=seed)  # its default share, as documented
        x_tr, y_tr = rest.x_train, rest.y_train
    else:
        x_tr, y_tr = ds.x_train, ds.y_train
        if isinstance(val, tuple):
            x_val, y_val = as_arrays(val)
        else:
            v = load(val, seed=seed)
            x_val = np.concatenate([v.x_train, v.x_test])
            y_val = np.concatenate([v.y_train, v.y_test])
    fit = Dataset(x_tr, y_tr, x_val, y_val, ds.class_names, f"{ds.name} (train/val)")
    return fit, ds


def _export(model: keras.Model, path: str, mode: str, calib: Dataset) -> str:
    """Writes `model` as a `mode` .tflite (calibrated on `calib` where it needs data)."""
    from tfcompress.export import to_tflite
    from tfcompress.quantization import is_quantize_aware

    needs_data = mode in ("int8", "int16x8") and not is_quantize_aware(model)
    return to_tflite(model, path, mode, calib if needs_data else None).path


def _measure(model: keras.Model, path: str, mode: str, calib: Dataset, test: Dataset,
             runs: int) -> dict:
    from tfcompress.bench import benchmark

    bench = benchmark(_export(model, path, mode, calib), test, runs=runs, threads=1).to_dict()
    return {"size_bytes": bench["size_bytes"], "gzip_bytes": bench["gzip_bytes"],
            "latency_ms_p50": bench["latency_ms_p50"], "latency_ms_p90": bench["latency_ms_p90"],
            "accuracy": bench["accuracy"]}


def compress(
    model: "keras.Model | str | os.PathLike",
    data: Any,
    recipe: "str | os.PathLike | dict | Recipe | None" = "default",
    out_dir: "str | os.PathLike" = "tfcompress-out",
    *,
    val: Any = None,
    max_accuracy_drop: float | None = None,
    seed: int = 0,
    runs: int = 100,
    batch_size: int = 64,
    verbose: int = 0,
    progress: Any = None,
) -> PipelineResult:
    """Runs a recipe on a trained model and measures every step in LiteRT.

    Each step starts from the previous step's model, fine-tunes on the training data with the
    model's compile settings, and is saved to OUT_DIR as `NN_<step>.keras` with its int8 export
    `NN_<step>.tflite` (timed and scored in LiteRT, 1 thread). The baseline row is the input
    model as float32 TFLite. A step with a `search` tries each value on the validation data
    and keeps the smallest or fastest model within `max_accuracy_drop` (1 point if not given).
    `report.json`, `report.md` and `report.png` (accuracy against size and latency) are
    written at the end; `state.json` after every step, so a run that stops resumes after its
    last completed step when called again with the same OUT_DIR, recipe and seed.

    Args:
        model: A trained Keras model or the path of a `.keras` file.
        data: Training and test data: `"mnist"`, `"shapes"`, an `.npz`, a folder, a `Dataset`.
        recipe: A built-in name (`default`, `quick`, `lowrank`, `distill`), a YAML/JSON file, a
            dict or a `Recipe`. Defaults to `"default"`.
        out_dir: Output folder (created). Defaults to `"tfcompress-out"`.
        val: Validation data for searches: a loader source, a `Dataset` (both its parts) or
            an `(x, y)` tuple. Defaults to `None`: `data.hold_out(seed=seed)`, 10 % of
            the training part, set aside from every step's training (the test part is only used
            for the reported figures). If the input model was trained on those images, its
            validation accuracy is optimistic and searches judge candidates too harshly: train
            on `data.hold_out(seed=seed)[0]` or pass held-out images.
        max_accuracy_drop: Accuracy budget in points against the baseline. Defaults to `None`.
        seed: Seed of the validation split and of every step. Defaults to `0`.
        runs: Timed LiteRT invocations per model. Defaults to `100`.
        batch_size: Training batch size. Defaults to `64`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        progress: A function called with one line of text per stage. Defaults to `None`.

    Returns:
        A `PipelineResult`.

    Raises:
        ValueError: For a bad recipe, data that does not fit the model, a step that cannot
            apply (the message says which and why), or an OUT_DIR holding another run.
    """
    say = progress or (lambda text: None)
    plan = load_recipe(recipe)
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    if not isinstance(model, keras.Model):
        model = _io.load_keras_model(model)
    fit_ds, test_ds = _splits(data, val, seed)
    _training.check_data_fits(model, test_ds)
    state_path = os.path.join(out, STATE)
    identity = {"recipe": plan.to_dict(), "seed": seed, "data": test_ds.name}
    state = _read_state(state_path, identity)
    budget = 1.0 if max_accuracy_drop is None else float(max_accuracy_drop)

    if state.get("baseline") is None:
        say("baseline: the input model as float32 TFLite")
        path = os.path.join(out, "00_baseline.keras")
        _io.save_model_atomic(model, path)
        m = _measure(model, os.path.join(out, "00_baseline_float32.tflite"), "float32", fit_ds,
                     test_ds, runs)
        state["baseline"] = StepRecord(0, "baseline", "input model, float32", path,
                                       os.path.join(out, "00_baseline_float32.tflite"),
                                       count_params(model), delta=0.0, seconds=0.0, **m
                                       ).to_dict()
        state["baseline_val_accuracy"] = _training.accuracy(model, fit_ds.x_test, fit_ds.y_test)
        _write_state(state_path, state)
    baseline = StepRecord(**state["baseline"])

    current = model
    records = [StepRecord(**r) for r in state["completed"]]
    if records:
        say(f"resuming after step {len(records)} ({records[-1].step})")
        current = _io.load_keras_model(records[-1].model_path)
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
                                              verbose, runs, out, index, say)
                else:
                    outcome = _steps.run(step, current, fit_ds, batch_size, verbose)
                new, info, skipped = outcome.model, outcome.info, outcome.skipped
                mode = "int8"
        if skipped:
            say(f"  skipped: {skipped}")
        model_path = f"{stem}.keras"
        _io.save_model_atomic(new, model_path)
        m = _measure(new, tflite, mode, fit_ds, test_ds, runs)
        description = step.describe()
        if search is not None:
            chosen = step.with_setting(SEARCHED[step.kind], info["chosen"])
            description = f"{chosen.describe()}, searched"
        record = StepRecord(index, step.kind, description, model_path, tflite,
                            count_params(new), delta=round(100 * (m["accuracy"]
                                                                   - baseline.accuracy), 2),
                            seconds=round(time.perf_counter() - start, 1), skipped=skipped,
                            info=_jsonable(info), search=search, **m)
        records.append(record)
        state["completed"].append(record.to_dict())
        _write_state(state_path, state)
        current = new
        say(f"  {record.params:,} params, {record.size_bytes:,} bytes, p50 "
            f"{record.latency_ms_p50:.3f} ms, accuracy {100 * record.accuracy:.2f} % "
            f"({record.delta:+.2f})")

    side_by_side = None
    if records:  # the headline speed-up: both files timed in turns, so load hits both alike
        from tfcompress.bench import time_side_by_side

        say("timing the baseline and the final model side by side")
        pair = time_side_by_side([baseline.tflite_path, records[-1].tflite_path], test_ds,
                                 runs=2 * runs)
        side_by_side = {"baseline_ms_p50": float(np.percentile(pair[0], 50)),
                        "final_ms_p50": float(np.percentile(pair[1], 50)), "runs": 2 * runs}
    result = PipelineResult(plan.to_dict(), test_ds.name, seed, baseline, tuple(records),
                            max_accuracy_drop, out, side_by_side)
    from tfcompress.pipeline._report import write_reports

    write_reports(result)
    return result


def _search(step: Step, model: keras.Model, fit_ds: Dataset, state: dict, budget: float,
            batch_size: int, verbose: int, runs: int, out: str, index: int,
            say: Any) -> tuple[_steps.Outcome, list]:
    """Tries each searched value; keeps the best within budget on the validation data."""
    key = SEARCHED[step.kind]
    base_val = state["baseline_val_accuracy"]
    candidates = []
    for value in step.search.values:
        outcome = _steps.run(step.with_setting(key, value), model, fit_ds, batch_size, verbose)
        val_acc = _training.accuracy(outcome.model, fit_ds.x_test, fit_ds.y_test)
        path = _export(outcome.model, os.path.join(out, f"{index:02d}_{step.kind}_search_{value}"
                                                   ".tflite"), "int8", fit_ds)
        candidates.append((value, outcome, val_acc, path))
    if step.search.objective == "latency":  # side by side: a passing load hits all alike
        from tfcompress.bench import time_side_by_side

        times = time_side_by_side([c[3] for c in candidates], fit_ds, runs=max(20, runs // 2))
        objectives = [float(np.percentile(t, 50)) for t in times]
    else:
        objectives = [os.path.getsize(c[3]) for c in candidates]
    tried = []
    best = None
    for (value, outcome, val_acc, path), objective in zip(candidates, objectives, strict=True):
        os.remove(path)
        ok = 100 * (base_val - val_acc) <= budget + 1e-9
        tried.append({key: value, "val_accuracy": val_acc, "within_budget": ok,
                      step.search.objective: objective})
        say(f"  search {key}={value}: validation accuracy {100 * val_acc:.2f} % "
            f"({'within' if ok else 'outside'} budget), {step.search.objective} {objective:.4g}")
        rank = (not ok, objective if ok else -val_acc)
        if best is None or rank < best[0]:
            best = (rank, value, outcome)
    _, value, outcome = best
    for row in tried:
        row["chosen"] = row[key] == value
    outcome.info = {**outcome.info, "searched": key, "chosen": value}
    return outcome, tried


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: str(o)))


def _read_state(path: str, identity: dict) -> dict:
    if not os.path.exists(path):
        return {**identity, "baseline": None, "completed": []}
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    for key, value in identity.items():
        if state.get(key) != value:
            raise ValueError(
                f"{os.path.dirname(path) or '.'} holds a run with a different {key} "
                f"({state.get(key)!r} vs {value!r}). Use another output folder, or delete this "
                "one to start over."
            )
    return state


def _write_state(path: str, state: dict) -> None:
    _io.write_text_atomic(path, json.dumps(state, indent=2))
