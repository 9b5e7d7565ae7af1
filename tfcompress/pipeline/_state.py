"""A run and its folder: the `Run` that carries a `compress` run's inputs and state from step
to step, which files a run writes in its folder, its `state.json` (read back and checked
against the run's identity, written with paths relative to the folder), and the clean-up of
a run that failed before its first step."""

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tfcompress import _io
from tfcompress.data import Dataset
from tfcompress.metrics import Metric
from tfcompress.pipeline._recipe import Recipe
from tfcompress.pipeline._records import StepRecord

STATE = "state.json"


_OUTPUT_NAME = re.compile(r"(\d\d_.*\.(keras|tflite|h|cc)|report\.(json|md|png)|state\.json|"
                          r"\.lock|\..*\.(keras|tflite|json|md|png))")


@dataclass
class Run:
    """What one `compress` run carries from step to step: its folder, recipe, data, budget and
    metric, how it trains and times, and the state it writes after every step. `trace` holds
    the files written before the first completed step (removed if the run fails there)."""

    out: str
    plan: Recipe
    fit_ds: Dataset
    test_ds: Dataset
    sources: dict
    identity: dict
    budget: float
    metric: Metric
    seed: int
    runs: int
    batch_size: int
    verbose: int
    say: Callable[[str], None]
    safe_mode: bool
    notes: list = field(default_factory=list)
    teacher: Any = None  # the input model, for fine-tuning with a teacher
    trace: dict = field(default_factory=lambda: {"written": [], "steps_done": 0})
    state: dict = field(default_factory=dict)

    @property
    def state_path(self) -> str:
        return self.path(STATE)

    def load_state(self) -> None:
        """Reads the folder's state (or starts a fresh one) and says the run's notes."""
        self.state = read_state(self.state_path, self.identity, self.plan, self.say)
        self.trace["steps_done"] = len(self.state["completed"])
        for text in self.notes:
            self.warn(text)

    def save_state(self) -> None:
        write_state(self.state_path, self.state, self.out)

    def warn(self, text: str) -> None:
        """Says `text` as a warning and keeps it for the report (once)."""
        self.say(f"warning: {text}")
        kept = self.state.setdefault("warnings", [])
        if text not in kept:
            kept.append(text)

    def complete(self, record: StepRecord) -> None:
        """Records a finished step in the state file."""
        self.state["completed"].append(record.to_dict())
        self.save_state()
        self.trace["steps_done"] = len(self.state["completed"])

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def limit(self, index: int) -> float:
        """How far below the baseline (in the metric's display units) the model may be on the
        validation data after step `index`: its share of the budget."""
        return self.budget * self.plan.share(index)


def is_run_output(name: str) -> bool:
    """True for the file names a run writes in its output folder."""
    return _OUTPUT_NAME.fullmatch(name) is not None


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from tfcompress import __version__

    found = {"tfcompress": __version__}
    for package in ("tensorflow", "keras"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def clean_up_unfinished(out: str, created: bool, trace: dict) -> None:
    """After a failure, with the folder locked: a run that leaves no completed step behind
    removes the files it wrote (its baseline files and state), and the lock file too if it
    made the folder, which the caller then removes."""
    if trace["steps_done"]:
        return
    for path in trace["written"] + ([os.path.join(out, _io.LOCK_NAME)] if created else []):
        with contextlib.suppress(OSError):
            os.remove(path)


def read_state(path: str, identity: dict, plan: Recipe, say: Any) -> dict:
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
    broken = next((r for r in records if record_problem(r)), None)
    if broken is not None:
        raise ValueError(f"{path} is damaged: a step record {record_problem(broken)}. Delete "
                         "the folder to start over, or choose another output folder.")
    if not state["completed"]:  # nothing worth keeping: start over
        return fresh
    for key, value in identity.items():
        if state.get(key) != value:
            raise ValueError(
                f"{out} holds a run with a different {IDENTITY_WORDS[key]} "
                f"({describe_change(key, state.get(key), value)}). Delete the folder to start "
                "over, choose another output folder, or run with the inputs it was made from "
                "to resume.")
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
        return with_paths(record, lambda p: os.path.join(out, p))

    state["completed"] = [inside(r) for r in state["completed"][:kept]]
    state["baseline"] = inside(state["baseline"])
    state["recipe"] = plan.to_dict()
    return state


IDENTITY_WORDS = {"model": "input model (its architecture or weights)",
                   "data": "data (the images or labels)", "seed": "seed",
                   "max_accuracy_drop": "accuracy budget", "batch_size": "batch size",
                   "metric": "metric",
                   "versions": "library version"}


def describe_change(key: str, old: Any, new: Any) -> str:
    if key == "data":
        return (f"content fingerprint {old} then, {new} now; a stream is identified by every "
                "sample it yields, so one that augments at random differs on every read")
    if key == "model":
        return f"content fingerprint {old} then, {new} now"
    return f"{old!r} then, {new!r} now"


def record_problem(record: Any) -> str | None:
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


def with_paths(record: dict, convert: Any) -> dict:
    """A step record with its two file paths converted (to or from relative to OUT)."""
    return {**record, "model_path": convert(record["model_path"]),
            "tflite_path": convert(record["tflite_path"])}


def write_state(path: str, state: dict, out: str) -> None:
    """Writes the state with every file path relative to the output folder, so the folder
    can be moved or resumed from anywhere."""
    def rel(record: dict) -> dict:
        return with_paths(record, lambda p: os.path.relpath(p, out))

    saved = {**state, "baseline": rel(state["baseline"]),
             "completed": [rel(r) for r in state["completed"]]}
    _io.write_text_atomic(path, json.dumps(saved, indent=2))
