"""tfcompress: make Keras 3 image models small and fast for edge devices, and prove it.

Subpackages load on first use, so `import tfcompress` (and the CLI's `--help`) stays instant:
`tfcompress.data`, `tfcompress.detection`, `tfcompress.export`, `tfcompress.bench`,
`tfcompress.pruning`, `tfcompress.quantization`, `tfcompress.distillation`,
`tfcompress.lowrank`, `tfcompress.pipeline`, `tfcompress.reference`; `tfcompress.compress`
runs a recipe.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from tfcompress._version import __version__

_SUBMODULES = ("bench", "data", "debug", "detection", "distillation", "export", "lowrank",
               "pipeline", "pruning", "quantization", "reference")

__all__ = ["__version__", "compress", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"tfcompress.{name}")
    if name == "compress":
        return importlib.import_module("tfcompress.pipeline").compress
    raise AttributeError(f"module 'tfcompress' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


def _register_serializables() -> None:
    try:
        importlib.import_module("tfcompress._serializables")
    except Exception as e:  # noqa: BLE001 (never break the user's `import keras`)
        warnings.warn(f"tfcompress could not register its Keras classes ({e}); load its "
                      "models after `import tfcompress.quantization`.", stacklevel=2)


class _LoaderThenRegister(importlib.abc.Loader):
    """Runs Keras' own loader, then registers tfcompress's Keras classes."""

    def __init__(self, inner: importlib.abc.Loader):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        _register_serializables()

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class _WhenKerasLoads(importlib.abc.MetaPathFinder):
    """Waits for the first `import keras`, so that `import tfcompress` stays free of
    TensorFlow (the CLI's `--help` is instant) while every `.keras` file tfcompress wrote
    loads once Keras is there. Removes itself after that import."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.util.find_spec("keras")
        if spec is not None and spec.loader is not None:
            spec.loader = _LoaderThenRegister(spec.loader)
        return spec


if "keras" in sys.modules:
    _register_serializables()
elif not any(isinstance(f, _WhenKerasLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _WhenKerasLoads())
