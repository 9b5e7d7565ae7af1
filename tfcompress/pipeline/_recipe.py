"""Recipes: an ordered list of compression steps with their settings, from YAML, JSON or a name.

```yaml
name: my-recipe
steps:
  - prune: {granularity: channel, sparsity: 0.5, round_to: 8, epochs: 4}
  - prune: {granularity: unstructured, sparsity: 0.5, epochs: 2}
  - qat: {epochs: 1}
  - export: {mode: int8}
```

A step may carry `search: {values: [...]}` to try several values of its main setting
(sparsity, factorization energy, student channel ratio) on the validation data. With
`strategy: backoff` (the built-in recipes'), the values are listed most compressed first and
the step keeps the most compressed one within its share of the accuracy budget, trying them by
bisection; with `strategy: all`, every value is tried and the smallest or fastest
(`objective: size | latency`) within its share is kept. A step none of whose values stays
within its share is skipped: the model passes through unchanged and the report says why.

The budget is shared: each step that trades accuracy for size or speed (distill, factorize,
prune) may bring the model, in all, to its share of the budget below the baseline, the shares
growing step by step to three quarters of the budget; the integer file (qat and export) may
use the rest. `auto` is not a fixed list: it is made from the model and the data at the start
of a run (`auto_recipe`), and the report says what it chose and why.
"""

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any

from tfcompress import _targets
from tfcompress._options import (
    CONV_MODES,
    CRITERIA,
    DISTILL,
    EXPORT,
    FACTORIZE,
    PRUNE,
    QAT,
    QUANTIZATION_MODES,
    RECIPE_OVERRIDES,
    SCOPES,
    STUDENT,
    TARGETS,
)

# A step's defaults are its function's (tfcompress/_options.py), but for RECIPE_OVERRIDES.
STEP_SETTINGS: dict[str, dict[str, Any]] = {
    "factorize": {"rank_ratio": None, "energy": None, "conv_mode": FACTORIZE["conv_mode"],
                  "min_params": FACTORIZE["min_params"], "epochs": FACTORIZE["epochs"],
                  "learning_rate": None},
    "distill": {"channels": STUDENT["channels"], "fold_pooling": STUDENT["fold_pooling"],
                "student": None, "epochs": DISTILL["epochs"],
                "temperature": DISTILL["temperature"], "alpha": DISTILL["alpha"],
                "learning_rate": DISTILL["learning_rate"], "round_to": 8, "input_downscale": 1},
    "prune": {"granularity": PRUNE["granularity"], "sparsity": None, "epochs": PRUNE["epochs"],
              "round_to": PRUNE["round_to"], "criterion": PRUNE["criterion"],
              "shrink": PRUNE["shrink"], "scope": PRUNE["scope"], "finetune_epochs": 0,
              "per_layer": False, **RECIPE_OVERRIDES["prune"]},
    "qat": {"epochs": QAT["epochs"], "learning_rate": QAT["learning_rate"],
            "float_layers": None},
    "export": {"mode": EXPORT["quantization"], "target": EXPORT["target"], "max_flash": None,
               "max_ram": None, "float_layers": None, "system_config": None,
               "memory_mode": None, "allow_cpu_ops": False, "max_latency_ms": None,
               "max_sram": None, "equalize": False, "bias_correction": False,
               "adaround": False},
}
# Export settings that repair post-training int8 of a float model (no qat step before).
REPAIRS = ("equalize", "bias_correction", "adaround")
# The setting a `search` varies, per step kind.
SEARCHED = {"factorize": "energy", "distill": "channels", "prune": "sparsity"}
OBJECTIVES = ("size", "latency")
STRATEGIES = ("all", "backoff")
TRADING = ("distill", "factorize", "prune")  # the steps that share the budget, in order
TRADING_SHARE = 0.75  # of the budget, for them; the integer file may use the rest
AUTO = "auto"  # made from the model and the data when a run starts (pipeline._auto)
EXPORT_MODES = QUANTIZATION_MODES
# How a setting is named in progress lines and reports where its key alone is ambiguous.
_SHOWN = {"channels": "channels removed"}
MAX_RECIPE_BYTES = 1_000_000  # a recipe is a few hundred bytes; this bounds a hostile one


def shown_name(key: str) -> str:
    """How a setting is named in progress lines and reports."""
    return _SHOWN.get(key, key)


def _number(low: float | None = None, high: float | None = None, *, integer: bool = False,
            low_open: bool = False, high_open: bool = False, optional: bool = False):
    """A rule for a numeric setting: returns an error text for a bad value, else None."""
    kind = "a whole number" if integer else "a number"
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    want = f"{kind} {' and '.join(p for p in (lo, hi) if p)}".strip()
    want += " (or null)" if optional else ""

    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                integer and not float(value).is_integer()):
            return f"expected {want}, got {value!r}"
        if value != value or (low is not None and (value < low or (low_open and value == low))) \
                or (high is not None and (value > high or (high_open and value == high))):
            return f"expected {want}, got {value!r}"
        return None

    check.allowed = want
    return check


def _choice(*choices: str, optional: bool = False):
    def check(value: Any) -> str | None:
        if (value is None and optional) or value in choices:
            return None
        return f"expected one of {list(choices)}, got {value!r}"

    check.choices = choices  # read by tests/test_options.py
    check.allowed = "one of " + ", ".join(f"`{c}`" for c in choices)
    return check


def _target(value: Any) -> str | None:
    if value in TARGETS or _targets.is_npu(value):
        return None
    return (f"expected one of {list(TARGETS)} or an Arm Ethos-U configuration such as "
            f"ethos-u55-128, got {value!r}")


_target.choices = TARGETS  # read by tests/test_options.py
_target.allowed = ", ".join(f"`{c}`" for c in TARGETS) + \
    ", or an Arm Ethos-U configuration Vela compiles for (`ethos-u55-128`, ...)"


def _name(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else \
        f"expected a name, got {value!r}"


_name.allowed = "a name (or null)"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {value!r}"


_flag.allowed = "true or false"


def _granularity(value: Any) -> str | None:
    import re

    if value in ("unstructured", "channel"):
        return None
    m = re.fullmatch(r"(\d+):(\d+)", value) if isinstance(value, str) else None
    if m and 0 < int(m.group(1)) < int(m.group(2)):
        return None
    return f"expected 'unstructured', 'channel' or N:M such as '2:4', got {value!r}"


_granularity.allowed = "`unstructured`, `channel` or N:M such as `2:4`"


def _float_layers(value: Any) -> str | None:
    if value is None or value == "auto" or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        return None
    return f"expected 'auto' or a list of layer names, got {value!r}"


_float_layers.allowed = "`auto` or a list of layer names (patterns allowed)"


def _model_file(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not os.path.isfile(value):
        return f"expected the path of a .keras file, got {value!r} (no such file)"
    return None


_model_file.allowed = "the path of a `.keras` file"


# How each setting is checked before any work starts (the values in STEP_SETTINGS pass).
RULES: dict[str, dict[str, Any]] = {
    "factorize": {"rank_ratio": _number(0, 1, low_open=True, optional=True),
                  "energy": _number(0, 1, low_open=True, optional=True),
                  "conv_mode": _choice(*CONV_MODES),
                  "min_params": _number(0, integer=True), "epochs": _number(0, integer=True),
                  "learning_rate": _number(0, low_open=True, optional=True)},
    "distill": {"channels": _number(0, 1, high_open=True), "fold_pooling": _flag,
                "student": _model_file, "epochs": _number(1, integer=True),
                "temperature": _number(0, low_open=True), "alpha": _number(0, 1),
                "learning_rate": _number(0, low_open=True), "round_to": _number(1, integer=True),
                "input_downscale": _number(1, integer=True)},
    "prune": {"granularity": _granularity,
              "sparsity": _number(0, 1, low_open=True, high_open=True, optional=True),
              "epochs": _number(1, integer=True), "round_to": _number(1, integer=True),
              "criterion": _choice(*CRITERIA), "shrink": _flag,
              "scope": _choice(*SCOPES), "finetune_epochs": _number(0, integer=True),
              "per_layer": _flag},
    "qat": {"epochs": _number(1, integer=True), "learning_rate": _number(0, low_open=True),
            "float_layers": _float_layers},
    "export": {"mode": _choice(*EXPORT_MODES),
               "target": _target,
               "max_flash": _number(1, integer=True, optional=True),
               "max_ram": _number(1, integer=True, optional=True),
               "float_layers": _float_layers,
               "system_config": _name, "memory_mode": _name, "allow_cpu_ops": _flag,
               "max_latency_ms": _number(0, low_open=True, optional=True),
               "max_sram": _number(1, integer=True, optional=True),
               "equalize": _flag, "bias_correction": _flag, "adaround": _flag},
}

# What each setting does, for the documentation (every key of RULES has one; a test checks).
MEANINGS: dict[str, dict[str, str]] = {
    "factorize": {
        "rank_ratio": "Keep this fraction of each layer's full rank.",
        "energy": "Keep this share of each layer's singular-value energy (searched).",
        "conv_mode": "`channel`: k x k then 1 x 1; `spatial`: k x 1 then 1 x k.",
        "min_params": "Leave layers with fewer weights alone.",
        "epochs": "Fine-tuning epochs after the split.",
        "learning_rate": "Fine-tuning learning rate (null: the model's own optimizer's)."},
    "distill": {
        "channels": "Fraction of the teacher's channels the student drops (searched).",
        "fold_pooling": "Turn each conv + 2x2 pooling of the teacher into a stride-2 conv.",
        "student": "A student model of your own instead of one made from the teacher.",
        "epochs": "Distillation epochs.",
        "temperature": "Softmax temperature of the teacher's soft targets.",
        "alpha": "Weight of the hard-label loss; the rest goes to the teacher's targets.",
        "learning_rate": "Learning rate of the student.",
        "round_to": "Keep the student's channel counts at multiples of this "
                    "(8 suits int8 kernels and Ethos-U NPUs).",
        "input_downscale": "Run the student at the input's resolution divided by this (an "
                           "input average pooling; for models that pool globally)."},
    "prune": {
        "granularity": "What is removed: single weights, N of every M, or whole channels.",
        "sparsity": "Final sparsity, or fraction of channels removed (searched).",
        "epochs": "Fine-tuning epochs while the sparsity rises.",
        "round_to": "Keep channel counts at multiples of this.",
        "criterion": "How channels are ranked: L1, L2 norm or BatchNorm scale.",
        "shrink": "Remove the pruned channels: a physically smaller model.",
        "scope": "Per-layer targets, or one global threshold.",
        "finetune_epochs": "Extra epochs at the final sparsity (or after shrinking).",
        "per_layer": "Per-layer sparsities from a sensitivity scan on the validation data."},
    "qat": {
        "epochs": "Quantization-aware fine-tuning epochs.",
        "learning_rate": "Learning rate of the fine-tuning.",
        "float_layers": "Layers kept in float (`auto`: the most sensitive, within budget)."},
    "export": {
        "mode": "Quantization of the file.",
        "target": "Runtime the file is verified on (and made for); with an Ethos-U target, "
                  "the searches rank and keep models by Vela's estimates.",
        "max_flash": "With a device target: refuse a model larger than this many bytes "
                     "(Ethos-U: the compiled model).",
        "max_ram": "With tflm: refuse a model whose arena is larger than this.",
        "float_layers": "Post-training int8: layers kept in float (`auto`: within budget).",
        "system_config": "Ethos-U: Vela's system configuration (null: Vela's default).",
        "memory_mode": "Ethos-U: Vela's memory mode (null: Vela's default).",
        "allow_cpu_ops": "Ethos-U: accept ops Vela leaves to the CPU.",
        "max_latency_ms": "Ethos-U: keep only models Vela estimates at most this fast.",
        "max_sram": "Ethos-U: keep only models that use at most this much SRAM (bytes).",
        "equalize": "Post-training int8 (no qat step): cross-layer equalization first.",
        "bias_correction": "Post-training int8 (no qat step): take each layer's mean "
                           "rounding error out of its bias.",
        "adaround": "Post-training int8 (no qat step): round each weight as its layer's "
                    "output needs (AdaRound)."},
}

BUILTIN: dict[str, dict] = {
    # Distill into a copy of the model with fewer channels and, where a convolution is
    # followed by pooling, a strided convolution instead; then sparsity for the compressed
    # size, QAT and an integer-only export. Each searched step keeps its most compressed
    # value within its share of the budget, or is skipped.
    "default": {
        "name": "default",
        "steps": [
            {"distill": {"channels": 0.5, "fold_pooling": True, "epochs": 12},
             "search": {"values": [0.5, 0.4, 0.25], "strategy": "backoff"}},
            {"prune": {"granularity": "unstructured", "epochs": 2},
             "search": {"values": [0.7, 0.5, 0.3], "strategy": "backoff"}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8", "float_layers": "auto"}},
        ],
    },
    "quick": {
        "name": "quick",
        "steps": [
            {"prune": {"granularity": "channel", "round_to": 8, "epochs": 2},
             "search": {"values": [0.5, 0.25], "strategy": "backoff"}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8", "float_layers": "auto"}},
        ],
    },
    "lowrank": {
        "name": "lowrank",
        "steps": [
            {"factorize": {"epochs": 1},
             "search": {"values": [0.8, 0.9, 0.95], "strategy": "backoff"}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8", "float_layers": "auto"}},
        ],
    },
    "distill": {
        "name": "distill",
        "steps": [
            {"distill": {"channels": 0.5, "epochs": 5},
             "search": {"values": [0.5, 0.25], "strategy": "backoff"}},
            {"prune": {"granularity": "unstructured", "epochs": 2},
             "search": {"values": [0.5, 0.3], "strategy": "backoff"}},
            {"qat": {"epochs": 1}},
            {"export": {"mode": "int8", "float_layers": "auto"}},
        ],
    },
}


@dataclass(frozen=True)
class Search:
    """Values to try for a step's main setting, and what to minimise among those in budget."""

    values: tuple
    objective: str = "size"
    strategy: str = "all"

    def __post_init__(self):
        if not self.values:
            raise ValueError("search.values must list at least one value.")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"search.objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"search.strategy must be one of {STRATEGIES}, got {self.strategy!r}.")


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
        for key, value in self.settings.items():
            problem = RULES[self.kind][key](value)
            if problem:
                raise ValueError(f"Step {self.kind!r}, setting {key!r}: {problem}.")
        if self.search is not None:
            if self.kind not in SEARCHED:
                raise ValueError(
                    f"Step {self.kind!r} cannot be searched; only {sorted(SEARCHED)}.")
            key = SEARCHED[self.kind]
            for value in self.search.values:
                problem = RULES[self.kind][key](value)
                if problem:
                    raise ValueError(
                        f"Step {self.kind!r}, search over {key!r}: {problem}.")
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Settings that are fine alone but not together."""
        if self.kind == "export":
            spec = _targets.get(self.get("target"))
            for key in _targets.DEVICE_OPTIONS:
                if self.get(key) not in (None, False) and key not in spec.device_options:
                    raise ValueError(
                        f"Step 'export': {key} does not go with target: {self.get('target')} "
                        f"({_targets.takers(key)} take it).")
        if self.kind == "factorize" and self.settings.get("rank_ratio") is not None and (
                self.settings.get("energy") is not None or self.search is not None):
            raise ValueError("Step 'factorize': give rank_ratio or energy (or a search over "
                             "energy), not both.")
        if self.kind == "prune":
            granularity = self.get("granularity")
            if self.get("finetune_epochs") and not (granularity == "channel"
                                                    and self.get("shrink")):
                raise ValueError(
                    "Step 'prune', setting 'finetune_epochs': training after pruning, without "
                    "masks, only applies to channel pruning with shrink; for other "
                    "granularities, raise epochs instead.")
            if ":" in granularity:
                n, m = (int(v) for v in granularity.split(":"))
                sparsities = [self.settings.get("sparsity")] + list(
                    self.search.values if self.search else [])
                for value in sparsities:
                    if value is not None and abs(value - (1 - n / m)) > 1e-9:
                        raise ValueError(
                            f"Step 'prune': granularity {granularity!r} means a sparsity of "
                            f"exactly {1 - n / m:g}, got sparsity {value!r}. Leave sparsity "
                            "out, or choose another N:M.")

    def get(self, key: str) -> Any:
        return self.settings.get(key, STEP_SETTINGS[self.kind][key])

    def with_setting(self, key: str, value: Any) -> "Step":
        return Step(self.kind, {**self.settings, key: value}, None)

    def to_dict(self) -> dict:
        out: dict = {self.kind: dict(self.settings)}
        if self.search is not None:
            out["search"] = {"values": list(self.search.values),
                             "objective": self.search.objective}
            if self.search.strategy != "all":
                out["search"]["strategy"] = self.search.strategy
        return out

    def describe(self) -> str:
        """`kind(setting=value, ...)`; a searched setting shows the values it tries."""
        searched = SEARCHED.get(self.kind) if self.search is not None else None
        parts = [f"{shown_name(k)}={v}" for k, v in self.settings.items() if k != searched]
        if searched:
            values = ", ".join(str(v) for v in self.search.values)
            parts.append(f"{shown_name(searched)} searched over [{values}]")
        return f"{self.kind}({', '.join(parts)})"


@dataclass(frozen=True)
class Recipe:
    """An ordered list of steps; `qat` may only be followed by `export`, which comes last."""

    name: str
    steps: tuple[Step, ...]
    choices: tuple[str, ...] = ()  # why `auto` made these steps (said in the report)

    def __post_init__(self):
        if not self.steps:
            raise ValueError("A recipe needs at least one step.")
        kinds = [s.kind for s in self.steps]
        if "export" in kinds[:-1]:
            raise ValueError("export must be the last step of a recipe.")
        export = self.steps[-1] if kinds[-1] == "export" else None
        float_layers = None if export is None else export.get("float_layers")
        if float_layers is not None:
            # `auto` applies only where int8 alone misses the budget, and with a qat step
            # only when that step was skipped (its model is then float).
            if export.get("mode") != "int8" or ("qat" in kinds and float_layers != "auto"):
                raise ValueError(
                    "export float_layers keeps layers float in a post-training int8 export: it "
                    "needs mode int8, and a list of layers needs no qat step (with a qat step, "
                    "give float_layers to the qat step, or use auto).")
        repairs = [k for k in REPAIRS if export is not None and export.get(k)]
        if repairs and (export.get("mode") != "int8" or "qat" in kinds):
            raise ValueError(
                f"export {repairs[0]} repairs post-training int8 of a float model: it needs "
                "mode int8 and no qat step (the qat step's model is exported as trained). "
                f"Drop the qat step or {repairs[0]}.")
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
            try:
                steps.append(Step(kinds[0], dict(settings), _search(search)))
            except ValueError as e:
                raise ValueError(f"Recipe step {i + 1}: {e}") from None
        return cls(str(config.get("name", "custom")), tuple(steps),
                   tuple(str(c) for c in config.get("choices") or ()))

    def to_dict(self) -> dict:
        out: dict = {"name": self.name, "steps": [s.to_dict() for s in self.steps]}
        if self.choices:
            out["choices"] = list(self.choices)
        return out

    def share(self, index: int) -> float:
        """The share of the budget the model may have used, in all, after step `index`
        (1-based): the steps that trade accuracy for size or speed split `TRADING_SHARE` of
        it, growing step by step; the quantization steps and any other may use all of it."""
        trading = [i for i, s in enumerate(self.steps, 1) if s.kind in TRADING]
        if index not in trading:
            return 1.0
        integer = any(s.kind == "qat" or (s.kind == "export" and s.get("mode") in (
            "int8", "int16x8")) for s in self.steps)
        room = TRADING_SHARE if integer else 1.0
        return room * (trading.index(index) + 1) / len(trading)

    @property
    def is_auto(self) -> bool:
        """True for the `auto` placeholder, which a run replaces with `auto_recipe`'s."""
        return self == AUTO_PLACEHOLDER

    def for_target(self, target: str | None, device: dict | None = None) -> "Recipe":
        """The recipe with its export step made for `target` with the `device` settings
        (`max_flash`, `max_latency_ms`, ...); a recipe without an export step gets one
        (int8). Unchanged when neither is given."""
        if target is None and not device:
            return self
        steps = list(self.steps)
        export = steps.pop() if steps[-1].kind == "export" else Step("export", {"mode": "int8"})
        settings = dict(export.settings)
        if target is not None:
            settings["target"] = target
        settings.update(device or {})
        return Recipe(self.name, (*steps, Step("export", settings)), self.choices)

    def device_limits(self) -> dict | None:
        """The export step's target and device settings when the searches must look at the
        device: a microcontroller with a flash or RAM budget (they keep only models that fit
        it), or an Ethos-U NPU (they keep only models that fit its budgets and rank by
        Vela's estimates)."""
        last = self.steps[-1]
        if last.kind != "export":
            return None
        target = last.get("target")
        spec = _targets.get(target)
        limits = {k: last.get(k) for k in spec.device_options}
        if _targets.is_npu(target) or (spec.device and any(
                v is not None for v in limits.values())):
            return {"target": target, **limits}
        return None


AUTO_PLACEHOLDER = Recipe(AUTO, (Step("export", {"mode": "int8", "float_layers": "auto"}),))


def _search(config: Any) -> Search | None:
    if config is None:
        return None
    example = "e.g. search: {values: [0.6, 0.5], strategy: backoff}"
    if not isinstance(config, dict):
        raise ValueError(f"search must be a mapping, {example}; got {config!r}.")
    unknown = set(config) - {"values", "objective", "strategy"}
    if unknown:
        raise ValueError(f"search has no setting {sorted(unknown)[0]!r}; {example}.")
    values = config.get("values", ())
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"search.values must be a list, {example}; got {values!r}.")
    return Search(tuple(values), config.get("objective", "size"),
                  config.get("strategy", "all"))


class _AliasError(ValueError):
    pass


def _safe_yaml(text: str) -> Any:
    """`yaml.safe_load` without anchors and aliases: a few hundred bytes of aliases can expand
    to gigabytes, and a recipe never needs them."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _AliasError(
                    f"Recipe YAML uses an alias (*{event.anchor}, line "
                    f"{event.start_mark.line + 1}); tfcompress refuses anchors and aliases. "
                    "Write each value out.")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)


def load_recipe(recipe: "str | os.PathLike | dict | Recipe | None") -> Recipe:
    """A `Recipe` from a built-in name, a `.yaml`/`.yml`/`.json` file, a dict, or itself.

    Raises:
        ValueError: For an unknown name, an unreadable file or an invalid recipe.
    """
    if recipe is None:
        recipe = AUTO
    if isinstance(recipe, Recipe):
        return recipe
    if recipe == AUTO:  # a placeholder until the run sees the model and the data
        return AUTO_PLACEHOLDER
    if isinstance(recipe, dict):
        return Recipe.from_dict(copy.deepcopy(recipe))
    text = os.fspath(recipe)
    if text in BUILTIN:
        return Recipe.from_dict(copy.deepcopy(BUILTIN[text]))
    if not os.path.isfile(text):
        raise ValueError(
            f"Recipe {text!r} is neither a built-in name ({', '.join(names())}) nor a "
            "file. Pass a .yaml or .json recipe file."
        )
    if os.path.getsize(text) > MAX_RECIPE_BYTES:
        raise ValueError(
            f"Recipe {text!r} is {os.path.getsize(text):,} bytes; a recipe is a short list of "
            f"steps (at most {MAX_RECIPE_BYTES:,} bytes). Check that this is the right file.")
    try:
        with open(text, encoding="utf-8") as f:
            raw = f.read()
        if text.endswith((".yaml", ".yml")):
            config = _safe_yaml(raw)
        else:
            config = json.loads(raw)
    except _AliasError:
        raise
    except Exception as e:  # noqa: BLE001 (any parse error becomes one clear message)
        detail = " ".join(str(e).split())
        raise ValueError(f"Could not read recipe {text!r}: {detail}") from None
    recipe_obj = Recipe.from_dict(config)
    if recipe_obj.name == "custom":
        recipe_obj = Recipe(os.path.splitext(os.path.basename(text))[0], recipe_obj.steps)
    return recipe_obj


def names() -> list[str]:
    """The built-in recipe names, `auto` first."""
    return [AUTO, *sorted(BUILTIN)]


def settings_table(kind: str | None = None) -> list[dict[str, Any]]:
    """Every setting a step takes (of one step `kind`, or of all): its default, the values it
    allows and what it does, as the recipe checks read them. The command line's `tfcompress
    recipes keys` and the documentation print this."""
    kinds = list(RULES) if kind is None else [kind]
    if kind is not None and kind not in RULES:
        raise ValueError(f"Unknown step {kind!r}; expected one of {sorted(RULES)}.")
    return [{"step": k, "setting": key, "default": STEP_SETTINGS[k][key],
             "allowed": rule.allowed, "searched": SEARCHED.get(k) == key,
             "meaning": MEANINGS[k][key]}
            for k in kinds for key, rule in RULES[k].items()]


def builtin_yaml(name: str) -> str:
    """A built-in recipe as YAML, ready to edit and pass back as a recipe file."""
    import yaml

    if name == AUTO:
        raise ValueError("auto has no fixed steps: a run makes them from its model and data and "
                         "writes them, with the reasons, under 'recipe' in its report.json "
                         "(save that part as a .yaml file to run it again as it is).")
    if name not in BUILTIN:
        raise ValueError(f"Unknown recipe {name!r}; the built-in ones are {names()}.")
    return yaml.safe_dump(BUILTIN[name], sort_keys=False, default_flow_style=None, width=96)
