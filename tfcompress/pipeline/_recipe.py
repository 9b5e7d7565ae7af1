"""Recipes: an ordered list of compression steps with their settings, from YAML, JSON or a name.

```yaml
name: my-recipe
steps:
  - prune: {granularity: channel, sparsity: 0.5, round_to: 8, epochs: 4}
  - prune: {granularity: unstructured, sparsity: 0.5, epochs: 2}
  - qat: {epochs: 1}
  - export: {mode: int8}
```

A step may carry `search: {values: [...], objective: size | latency}` to try several values of
its main setting (sparsity, factorization energy, student channel ratio) and keep the smallest
or fastest model that stays within the accuracy budget on the validation data.
"""

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any

STEP_SETTINGS: dict[str, dict[str, Any]] = {
    "factorize": {"rank_ratio": None, "energy": None, "conv_mode": "channel",
                  "min_params": 4096, "epochs": 1, "learning_rate": None},
    "distill": {"channels": 0.5, "fold_pooling": False, "student": None, "epochs": 5,
                "temperature": 4.0, "alpha": 0.1, "learning_rate": 1e-3},
    "prune": {"granularity": "unstructured", "sparsity": None, "epochs": 3, "round_to": 1,
              "criterion": "l1", "shrink": True, "scope": "layer", "finetune_epochs": 0},
    "qat": {"epochs": 1, "learning_rate": 1e-4},
    "export": {"mode": "int8"},
}
# The setting a `search` varies, per step kind.
SEARCHED = {"factorize": "energy", "distill": "channels", "prune": "sparsity"}
OBJECTIVES = ("size", "latency")
EXPORT_MODES = ("int8", "float16", "dynamic", "int16x8", "float32")

BUILTIN: dict[str, dict] = {
    # Distill into a copy of the model with fewer channels and, where a convolution is
    # followed by pooling, a strided convolution instead: the fastest of three widths within
    # the budget. Then sparsity for the compressed size, QAT and an integer-only export.
    "default": {
        "name": "default",
        "steps": [
            {"distill": {"channels": 0.5, "fold_pooling": True, "epochs": 12},
             "search": {"values": [0.75, 0.6, 0.5], "objective": "latency"}},
            {"prune": {"granularity": "unstructured", "sparsity": 0.5, "epochs": 2}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8"}},
        ],
    },
    "quick": {
        "name": "quick",
        "steps": [
            {"prune": {"granularity": "channel", "sparsity": 0.5, "round_to": 8, "epochs": 2}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8"}},
        ],
    },
    "lowrank": {
        "name": "lowrank",
        "steps": [
            {"factorize": {"rank_ratio": 0.25, "epochs": 1}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8"}},
        ],
    },
    "distill": {
        "name": "distill",
        "steps": [
            {"distill": {"channels": 0.5, "epochs": 5}},
            {"prune": {"granularity": "unstructured", "sparsity": 0.5, "epochs": 2}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8"}},
        ],
    },
}


@dataclass(frozen=True)
class Search:
    """Values to try for a step's main setting, and what to minimise among those in budget."""

    values: tuple
    objective: str = "size"

    def __post_init__(self):
        if not self.values:
            raise ValueError("search.values must list at least one value.")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"search.objective must be one of {OBJECTIVES}, got {self.objective!r}.")


@dataclass(frozen=True)
class Step:
    """One step: its kind, its settings (defaults filled in) and an optional search."""

    kind: str
    settings: dict = field(default_factory=dict)
    search: Search | None = None

    def __post_init__(self):
        if self.kind not in STEP_SETTINGS:
            raise ValueError(
                f"Unknown step {self.kind!r}; expected one of {sorted(STEP_SETTINGS)}.")
        unknown = set(self.settings) - set(STEP_SETTINGS[self.kind])
        if unknown:
            raise ValueError(
                f"Step {self.kind!r} has no setting {sorted(unknown)[0]!r}; its settings are "
                f"{sorted(STEP_SETTINGS[self.kind])}."
            )
        if self.search is not None and self.kind not in SEARCHED:
            raise ValueError(f"Step {self.kind!r} cannot be searched; only {sorted(SEARCHED)}.")
        if self.kind == "export" and self.settings.get("mode", "int8") not in EXPORT_MODES:
            raise ValueError(
                f"export mode must be one of {EXPORT_MODES}, got {self.settings['mode']!r}.")

    def get(self, key: str) -> Any:
        return self.settings.get(key, STEP_SETTINGS[self.kind][key])

    def with_setting(self, key: str, value: Any) -> "Step":
        return Step(self.kind, {**self.settings, key: value}, None)

    def to_dict(self) -> dict:
        out: dict = {self.kind: dict(self.settings)}
        if self.search is not None:
            out["search"] = {"values": list(self.search.values),
                             "objective": self.search.objective}
        return out

    def describe(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.kind}({parts})"


@dataclass(frozen=True)
class Recipe:
    """An ordered list of steps; `qat` may only be followed by `export`, which comes last."""

    name: str
    steps: tuple[Step, ...]

    def __post_init__(self):
        if not self.steps:
            raise ValueError("A recipe needs at least one step.")
        kinds = [s.kind for s in self.steps]
        if "export" in kinds[:-1]:
            raise ValueError("export must be the last step of a recipe.")
        if "qat" in kinds:
            after = kinds[kinds.index("qat") + 1:]
            if any(k != "export" for k in after):
                raise ValueError(
                    "Only export may follow qat: the quantization-aware model is what gets "
                    f"exported. Order found: {' -> '.join(kinds)}. Move qat after "
                    "prune/factorize/distill."
                )

    @classmethod
    def from_dict(cls, config: dict) -> "Recipe":
        if not isinstance(config, dict) or not isinstance(config.get("steps"), list):
            raise ValueError(
                "A recipe is a mapping with a 'steps' list, e.g. {'steps': [{'qat': "
                "{'epochs': 1}}, {'export': {'mode': 'int8'}}]}."
            )
        steps = []
        for i, item in enumerate(config["steps"]):
            if not isinstance(item, dict):
                raise ValueError(f"Recipe step {i + 1} must be a mapping, got {item!r}.")
            search = item.get("search")
            kinds = [k for k in item if k != "search"]
            if len(kinds) != 1:
                raise ValueError(
                    f"Recipe step {i + 1} must name exactly one step kind, got {kinds}.")
            settings = item[kinds[0]] or {}
            if not isinstance(settings, dict):
                raise ValueError(f"Settings of step {i + 1} ({kinds[0]}) must be a mapping.")
            steps.append(Step(kinds[0], dict(settings), None if search is None else Search(
                tuple(search.get("values", ())), search.get("objective", "size"))))
        return cls(str(config.get("name", "custom")), tuple(steps))

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": [s.to_dict() for s in self.steps]}


def load_recipe(recipe: "str | os.PathLike | dict | Recipe | None") -> Recipe:
    """A `Recipe` from a built-in name, a `.yaml`/`.yml`/`.json` file, a dict, or itself.

    Raises:
        ValueError: For an unknown name, an unreadable file or an invalid recipe.
    """
    if recipe is None:
        recipe = "default"
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return Recipe.from_dict(copy.deepcopy(recipe))
    text = os.fspath(recipe)
    if text in BUILTIN:
        return Recipe.from_dict(copy.deepcopy(BUILTIN[text]))
    if not os.path.isfile(text):
        raise ValueError(
            f"Recipe {text!r} is neither a built-in name ({', '.join(sorted(BUILTIN))}) nor a "
            "file. Pass a .yaml or .json recipe file."
        )
    with open(text, encoding="utf-8") as f:
        raw = f.read()
    try:
        if text.endswith((".yaml", ".yml")):
            import yaml

            config = yaml.safe_load(raw)
        else:
            config = json.loads(raw)
    except Exception as e:  # noqa: BLE001 (any parse error becomes one clear message)
        raise ValueError(f"Could not read recipe {text!r}: {e}") from None
    recipe_obj = Recipe.from_dict(config)
    if recipe_obj.name == "custom":
        recipe_obj = Recipe(os.path.splitext(os.path.basename(text))[0], recipe_obj.steps)
    return recipe_obj
