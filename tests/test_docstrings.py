"""Every `Examples:` section of a public docstring runs, so the documentation cannot go stale."""

import doctest
import importlib

import pytest

MODULES = [
    "tfcompress.data._loaders",
    "tfcompress.export._export",
    "tfcompress.bench._benchmark",
    "tfcompress.pruning.schedules",
    "tfcompress.pruning._masks",
    "tfcompress.pruning._callback",
    "tfcompress.pruning._report",
    "tfcompress.quantization._transform",
    "tfcompress.reference",
    "tfcompress.distillation._distiller",
    "tfcompress.distillation._student",
    "tfcompress.lowrank._factorize",
    "tfcompress.debug._layer_errors",
    "tfcompress.debug._sensitivity",
    "tfcompress.metrics",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
