"""The one place where an option's choices and default live.

The Python functions take their defaults from here, the recipe schema (`pipeline/_recipe.py`)
its choices, and the click options both; `tests/test_options.py` checks that all three agree.
This module imports nothing heavy, so the CLI can read it without loading TensorFlow.

Where a recipe step deliberately differs from the function it calls, `RECIPE_OVERRIDES` says
so (the pipeline's channel-pruning step shrinks the model: its point is a smaller file).
"""

from types import MappingProxyType

from tfcompress._targets import TARGETS  # noqa: F401  (one list of targets, re-exported)

QUANTIZATION_MODES: tuple[str, ...] = ("float32", "float16", "dynamic", "int8", "int16x8")
CRITERIA: tuple[str, ...] = ("l1", "l2", "bn_scale")
SCOPES: tuple[str, ...] = ("layer", "global")
CONV_MODES: tuple[str, ...] = ("channel", "spatial")
INPUT_RANGES: tuple[str, ...] = ("0-1", "-1-1", "0-255")  # what images become for the model
SPLITS: tuple[str, ...] = ("all", "train", "test")  # which part of a data source is read

# Defaults per function, keyed by the function's argument names.
PRUNE = MappingProxyType({"granularity": "unstructured", "scope": "layer", "epochs": 3,
                          "batch_size": 64, "round_to": 1, "criterion": "l1",
                          "shrink": False})
QAT = MappingProxyType({"epochs": 1, "batch_size": 64, "learning_rate": 1e-4})
FACTORIZE = MappingProxyType({"conv_mode": "channel", "min_params": 4096,
                              "epochs": 1, "batch_size": 64})  # epochs: fine-tuning after
DISTILL = MappingProxyType({"epochs": 5, "batch_size": 64, "learning_rate": 1e-3,
                            "temperature": 4.0, "alpha": 0.1})
STUDENT = MappingProxyType({"channels": 0.5, "fold_pooling": False})
EXPORT = MappingProxyType({"quantization": "int8", "target": "litert",
                           "num_calibration_samples": 200})

# Recipe steps that differ from their function on purpose: step -> {setting: value}.
RECIPE_OVERRIDES = MappingProxyType({"prune": {"shrink": True}})
