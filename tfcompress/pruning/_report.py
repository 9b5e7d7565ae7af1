"""How sparse a model's prunable weights are."""

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.pruning._selection import prunable_targets


@dataclass(frozen=True)
class WeightSparsity:
    """Zeros in one prunable weight."""

    layer: str
    weight: str
    shape: tuple[int, ...]
    zeros: int
    size: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size

    def to_dict(self) -> dict:
        return {"layer": self.layer, "weight": self.weight, "shape": list(self.shape),
                "zeros": self.zeros, "size": self.size, "sparsity": self.sparsity}


@dataclass(frozen=True)
class SparsityReport:
    """Per-weight and overall sparsity of a model's prunable weights."""

    weights: tuple[WeightSparsity, ...]

    @property
    def sparsity(self) -> float:
        """Zeros over all prunable weights."""
        return sum(w.zeros for w in self.weights) / max(1, sum(w.size for w in self.weights))

    def to_dict(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "layers": {f"{w.layer}/{w.weight}": w.to_dict() for w in self.weights},
        }

    def __str__(self) -> str:
        rows = [("weight", "shape", "size", "sparsity")]
        rows += [(f"{w.layer}/{w.weight}", "x".join(map(str, w.shape)), f"{w.size:,}",
                  f"{w.sparsity:.3f}") for w in self.weights]
        rows.append(("total", "", f"{sum(w.size for w in self.weights):,}",
                     f"{self.sparsity:.3f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        )


def sparsity_report(model: keras.Model, layers: Any = None, exclude: Any = None, *,
                    prune_depthwise: bool = True, min_weights: int = 0) -> SparsityReport:
    """Measures the fraction of exact zeros in each prunable weight of `model`.

    Args:
        model: A built Keras model.
        layers: Report only layers matching these (classes, name patterns, predicates).
            Defaults to `None` (every supported layer).
        exclude: Leave out layers matching these. Defaults to `None`.
        prune_depthwise: With `layers=None`, report depthwise kernels too. Pass the `Pruning`
            callback's setting to report exactly the weights it pruned. Defaults to `True`.
        min_weights: With `layers=None`, leave out weights with fewer values than this,
            unless all of them are that small. Defaults to `0`.

    Returns:
        A `SparsityReport`; `str()` gives a table, `to_dict()` a dict.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> sparsity_report(model).sparsity
        0.0
    """
    rows = []
    for t in prunable_targets(model, layers, exclude, prune_depthwise=prune_depthwise,
                              min_weights=min_weights):
        w = ops.convert_to_numpy(t.variable)
        rows.append(WeightSparsity(t.layer.name, t.attribute, tuple(w.shape),
                                   int(np.count_nonzero(w == 0)), int(w.size)))
    return SparsityReport(tuple(rows))
