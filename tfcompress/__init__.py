"""tfcompress: make Keras 3 image models small and fast for edge devices, and prove it.

Subpackages load on first use, so `import tfcompress` (and the CLI's `--help`) stays instant:
`tfcompress.data`, `tfcompress.export`, `tfcompress.bench`, `tfcompress.pruning`,
`tfcompress.quantization`, `tfcompress.distillation`, `tfcompress.lowrank`,
`tfcompress.pipeline`, `tfcompress.reference`; `tfcompress.compress` runs a recipe.
"""

import importlib

from tfcompress._version import __version__

_SUBMODULES = ("bench", "data", "distillation", "export", "lowrank", "pipeline", "pruning",
               "quantization", "reference")

__all__ = ["__version__", "compress", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"tfcompress.{name}")
    if name == "compress":
        return importlib.import_module("tfcompress.pipeline").compress
    raise AttributeError(f"module 'tfcompress' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
