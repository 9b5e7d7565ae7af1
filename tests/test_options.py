"""One spec per option: the functions, the click options and the recipe schema agree with
`tfcompress/_options.py`, so no copy can drift."""

import inspect

import click
import pytest

from tfcompress import _options
from tfcompress.cli import main as cli
from tfcompress.distillation import distill, make_student
from tfcompress.export import to_tflite
from tfcompress.lowrank import factorize
from tfcompress.pipeline import _recipe
from tfcompress.pruning import _channels, prune
from tfcompress.quantization import train_quantized

# (function, its spec, CLI command, CLI option name -> spec key, recipe step, setting -> key)
CASES = [
    (prune, _options.PRUNE, "prune",
     {"granularity": "granularity", "scope": "scope", "epochs": "epochs",
      "batch_size": "batch_size", "round_to": "round_to", "criterion": "criterion",
      "shrink": "shrink"},
     "prune", {"granularity": "granularity", "scope": "scope", "epochs": "epochs",
               "round_to": "round_to", "criterion": "criterion", "shrink": "shrink"}),
    (train_quantized, _options.QAT, "qat",
     {"epochs": "epochs", "batch_size": "batch_size", "learning_rate": "learning_rate"},
     "qat", {"epochs": "epochs", "learning_rate": "learning_rate"}),
    (factorize, _options.FACTORIZE, "factorize",
     {"conv_mode": "conv_mode", "min_params": "min_params", "epochs": "epochs",
      "batch_size": "batch_size"},
     "factorize", {"conv_mode": "conv_mode", "min_params": "min_params", "epochs": "epochs"}),
    (distill, _options.DISTILL, "distill",
     {"epochs": "epochs", "batch_size": "batch_size", "learning_rate": "learning_rate",
      "temperature": "temperature", "alpha": "alpha"},
     "distill", {"epochs": "epochs", "temperature": "temperature", "alpha": "alpha",
                 "learning_rate": "learning_rate"}),
    (make_student, _options.STUDENT, None, {}, "distill",
     {"channels": "channels", "fold_pooling": "fold_pooling"}),
    (to_tflite, _options.EXPORT, "export",
     {"quantization": "quantization", "target": "target",
      "calibration_samples": "num_calibration_samples"},
     "export", {"mode": "quantization", "target": "target"}),
]


def _cli_params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in cli.commands[command].params}


@pytest.mark.parametrize("case", CASES, ids=[c[0].__name__ for c in CASES])
def test_function_cli_and_recipe_defaults_agree_with_the_spec(case):
    function, spec, command, cli_keys, step, recipe_keys = case
    signature = inspect.signature(function).parameters
    for key, value in spec.items():
        if key in signature:
            assert signature[key].default == value, (function.__name__, key)
    if command:
        params = _cli_params(command)
        for option, key in cli_keys.items():
            assert params[option].default == spec[key], (command, option)
    overrides = _options.RECIPE_OVERRIDES.get(step, {})
    for setting, key in recipe_keys.items():
        want = overrides.get(setting, spec[key])
        assert _recipe.STEP_SETTINGS[step][setting] == want, (step, setting)


def test_choices_agree_everywhere():
    assert set(_channels.CRITERIA) == set(_options.CRITERIA)
    pairs = [
        ("prune", "criterion", _recipe.RULES["prune"]["criterion"], _options.CRITERIA),
        ("prune", "scope", _recipe.RULES["prune"]["scope"], _options.SCOPES),
        ("factorize", "conv_mode", _recipe.RULES["factorize"]["conv_mode"],
         _options.CONV_MODES),
        ("export", "quantization", _recipe.RULES["export"]["mode"], _options.QUANTIZATION_MODES),
        ("export", "target", _recipe.RULES["export"]["target"], _options.TARGETS),
    ]
    for command, option, rule, choices in pairs:
        assert tuple(_cli_params(command)[option].type.choices) == tuple(choices), option
        assert tuple(rule.choices) == tuple(choices), option
        assert rule(choices[0]) is None and rule("nonsense") is not None


def test_the_shrink_switch_has_one_name():
    assert "shrink" in inspect.signature(prune).parameters
    assert "--shrink" in _cli_params("prune")["shrink"].opts
    assert "shrink" in _recipe.STEP_SETTINGS["prune"]


def test_every_recipe_setting_is_documented_with_its_range():
    assert set(_recipe.MEANINGS) == set(_recipe.RULES) == set(_recipe.STEP_SETTINGS)
    for kind, rules in _recipe.RULES.items():
        assert set(_recipe.MEANINGS[kind]) == set(rules) == set(_recipe.STEP_SETTINGS[kind])
        for key, rule in rules.items():
            assert rule.allowed and _recipe.MEANINGS[kind][key].endswith("."), (kind, key)
