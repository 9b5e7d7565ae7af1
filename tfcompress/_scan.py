"""What a sensitivity scan found, as data: per-layer drops, the allocations read from them
(per-layer sparsities, float layers within a budget), its JSON file and plot. The scans
themselves run in `tfcompress.debug`; this module sits below the techniques, which read
scans (`quantize_aware(..., float_layers="auto")`) without importing the scanner."""

import json
import os
from dataclasses import dataclass

import numpy as np

from tfcompress import _io
from tfcompress.metrics import Metric


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer of a scan: its size and the model's accuracy with only it changed.

    Attributes:
        layer: Layer name (for `channels`, the channel group: its producers joined by `+`).
        weights: Number of weights the change applies to (the group's producers' kernels for
            `channels`).
        consumers: For `quantize`: the layers that read its output, up to the next weighted
            layers.
        macs: Multiply-accumulates per image that scale with it: its own for `prune` and
            `quantize`; for `channels`, those of the group's producers, members and readers.
        accuracy: The scan's metric (top-1 accuracy unless told) with only this layer changed.
        drop: How much worse than the baseline that is, in the metric's units (for accuracy a
            fraction: 0.01 is one point; for an error metric, the rise).
    """

    layer: str
    weights: int
    accuracy: float
    drop: float
    consumers: tuple[str, ...] = ()
    macs: int = 0

    def to_dict(self) -> dict:
        return {**self.__dict__, "consumers": list(self.consumers)}


@dataclass(frozen=True)
class SensitivityScan:
    """A scan's result; `str()` is the table, most sensitive first."""

    technique: str
    amount: float
    baseline: float
    samples: int
    layers: tuple[LayerSensitivity, ...]
    model_fingerprint: str = ""
    all_changed: float | None = None
    metric: dict | None = None

    def ranked(self) -> list[LayerSensitivity]:
        """Layers from the most to the least sensitive."""
        return sorted(self.layers, key=lambda s: -s.drop)

    def to_dict(self) -> dict:
        return {"technique": self.technique, "amount": self.amount, "baseline": self.baseline,
                "samples": self.samples, "model_fingerprint": self.model_fingerprint,
                "all_changed": self.all_changed, "metric": self.metric,
                "layers": [s.to_dict() for s in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "SensitivityScan":
        return cls(d["technique"], float(d["amount"]), float(d["baseline"]), int(d["samples"]),
                   tuple(LayerSensitivity(**{**s, "consumers": tuple(s.get("consumers", ()))})
                         for s in d["layers"]),
                   d.get("model_fingerprint", ""), d.get("all_changed"), d.get("metric"))

    def save(self, path: "str | os.PathLike") -> str:
        """Writes the scan as JSON (atomically). Returns the path."""
        _io.write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return os.fspath(path)

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "SensitivityScan":
        """Reads a scan written by `save`."""
        try:
            return cls.from_dict(json.loads(open(path).read()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{os.fspath(path)} is not a sensitivity scan written by "
                             f"tfcompress ({e}). Run the scan again.") from None

    def __str__(self) -> str:
        what = {"prune": f"only it pruned to {self.amount:.0%} sparsity",
                "quantize": "only it quantized to int8 (weights and output)",
                "channels": f"only its channels thinned by {self.amount:.0%}",
                "int4": "every layer int8, only it with 4-bit weights"}[self.technique]
        m = Metric.from_dict(self.metric)
        rows = [("layer", "weights", "accuracy" if m.name == "top1" else m.name,
                 "drop (points)" if m.percent else "worse by")]
        rows += [(s.layer, f"{s.weights:,}", m.format(s.accuracy),
                  f"{m.display(s.drop):+.4g}") for s in self.ranked()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
        return "\n".join([f"Sensitivity, {what}; baseline {m.format(self.baseline)} on "
                          f"{self.samples} images", *lines])

    def plot(self, path: "str | os.PathLike") -> str:
        """Writes a PNG bar chart of the drop per layer, in graph order. Returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(self.layers)), 4))
        m = Metric.from_dict(self.metric)
        ax.bar(range(len(self.layers)), [m.display(s.drop) for s in self.layers])
        ax.set_xticks(range(len(self.layers)), [s.layer for s in self.layers], rotation=90,
                      fontsize=7)
        ax.set_ylabel("accuracy drop (points)" if m.name == "top1" else
                      f"{m.name}: worse by{' (points)' if m.percent else ''}")
        ax.set_title(f"sensitivity: {self.technique}"
                     + ("" if self.technique in ("quantize", "int4") else f" {self.amount:g}"))
        fig.tight_layout()
        with _io.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return os.fspath(path)

    def sparsities(self, target: float, max_sparsity: float = 0.95,
                   by: str = "weights") -> dict[str, float]:
        """Per-layer sparsities with the same overall sparsity as `target`, more where a
        layer lost less in the scan.

        Each layer gets `target * c / sqrt(drop + 0.005)` (clipped to `[0, max_sparsity]`;
        for a metric that is not a percentage, 0.005 times the baseline's size),
        with `c` set so that the mean weighted by `by` is `target`: `"weights"` (the same
        number of weights removed: size) or `"macs"` (the same share of multiply-accumulates
        removed: speed; channels removed from a high-resolution layer count for more).
        Feed the result to `Pruning(..., layer_sparsity=...)` (or, for a `channels` scan, as
        channel ratios).
        """
        if by not in ("weights", "macs"):
            raise ValueError(f"by must be 'weights' or 'macs', got {by!r}.")
        if self.technique not in ("prune", "channels"):
            raise ValueError(f"sparsities come from a 'prune' or 'channels' scan, not a "
                             f"{self.technique!r} one.")
        if not 0.0 <= target <= max_sparsity:
            raise ValueError(f"target must be in [0, {max_sparsity}], got {target}.")
        sizes = np.array([s.macs if by == "macs" else s.weights for s in self.layers],
                         dtype=np.float64)
        if sizes.sum() <= 0:
            raise ValueError(f"This scan has no {by} counts; scan the model again.")
        floor = 0.005 if Metric.from_dict(self.metric).percent else 0.005 * max(
            abs(self.baseline), 1e-12)
        ease = 1.0 / np.sqrt(np.maximum(np.array([s.drop for s in self.layers]), 0.0) + floor)
        lo, hi = 0.0, 1e6
        for _ in range(100):  # bisect the scale so the weighted mean meets the target
            c = (lo + hi) / 2
            values = np.clip(target * c * ease / ease.mean(), 0.0, max_sparsity)
            if np.sum(values * sizes) / sizes.sum() < target:
                lo = c
            else:
                hi = c
        values = np.clip(target * hi * ease / ease.mean(), 0.0, max_sparsity)
        return {s.layer: round(float(v), 4) for s, v in zip(self.layers, values, strict=True)}

    def float_layers(self, budget: float = 0.01, max_layers: int = 3,
                     min_drop: float = 0.001) -> list[str]:
        """For a `quantize` scan: the layers to keep in float (`to_tflite(...,
        float_layers=...)`), most sensitive first, while the estimated loss of the fully
        quantized model (how much worse `all_changed` is than `baseline`, less the drops of the
        layers kept) is over `budget` (in the metric's units: for accuracy a fraction, 0.01 is
        one point), at most `max_layers`; a layer whose own drop is under `min_drop` is never
        kept.

        The scan quantized each layer's weights and its output; a float op's output is still
        quantized when the op that reads it is int8, so each chosen layer comes with the
        layers that read its output (up to the next weighted layers), and the list holds
        those too."""
        if self.technique != "quantize":
            raise ValueError(f"float layers come from a 'quantize' scan, not a "
                             f"{self.technique!r} one.")
        gap = Metric.from_dict(self.metric).drop(
            self.all_changed if self.all_changed is not None else self.baseline, self.baseline)
        chosen: list[str] = []
        for s in self.ranked():
            if gap <= budget or len(chosen) >= max_layers or s.drop < min_drop:
                break
            chosen.append(s)
            gap -= s.drop
        return list(dict.fromkeys(n for s in chosen for n in (s.layer, *s.consumers)))

    def int4_layers(self, budget: float = 0.01) -> dict[str, int]:
        """For an `int4` scan: the layers to give 4-bit weights, as `quantize_aware` takes them
        (`weight_bits=scan.int4_layers(0.01)`): the layers whose 4-bit weights cost least
        for the bytes they save (drop per weight), taken in that order while the sum of their
        drops stays within `budget` (in the metric's units: for accuracy a fraction, 0.01 is
        one point, counted from the all-int8 model); a layer that loses nothing costs
        nothing. Before training: quantization-aware training usually wins some of it back.
        """
        if self.technique != "int4":
            raise ValueError(f"int4 layers come from an 'int4' scan, not a {self.technique!r} "
                             "one.")
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}.")
        spent, chosen = 0.0, {}
        for s in sorted(self.layers, key=lambda s: max(s.drop, 0.0) / max(s.weights, 1)):
            cost = max(s.drop, 0.0)
            if spent + cost > budget:
                continue
            spent += cost
            chosen[s.layer] = 4
        return chosen
