"""tfcompress: make Keras 3 image models small and fast for edge devices, and prove it.

Subpackages load on first use, so `import tfcompress` (and the CLI's `--help`) stays instant:
`tfcompress.data`, `tfcompress.export`, `tfcompress.bench`, `tfcompress.pruning`,
`tfcompress.quantization`, `tfcompress.distillation`, `tfcompress.lowrank`,
`tfcompress.reference`.
"""

import importlib

from tfcompress._version import __version__

_SUBMODULES = ("bench", "data", "distillation", "export", "lowrank", "pruning", "quantization",
               "reference")

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"tfcompress.{name}")
    raise AttributeError(f"module 'tfcompress' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
