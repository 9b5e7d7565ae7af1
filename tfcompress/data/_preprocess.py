"""What a model expects its images to look like, declared once.

The loaders read images as values in [0, 1]; `Preprocessing` turns them into the range the
model was trained on (`"0-1"`, `"-1-1"` as MobileNet's preprocessing, `"0-255"` as MLPerf
Tiny's ResNet-8 or a model that starts with `Rescaling(1/255)`), then subtracts a per-channel
mean and divides by a standard deviation, in the units of that range, when given.
`Preprocessing.from_model` reads it from a model whose first layer is a `Rescaling` or
`Normalization`.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from tfcompress._options import INPUT_RANGES

_SCALE = {"0-1": (1.0, 0.0), "-1-1": (2.0, -1.0), "0-255": (255.0, 0.0)}


@dataclass(frozen=True)
class Preprocessing:
    """How images in [0, 1] become the model's input.

    Args:
        input_range: `"0-1"`, `"-1-1"` or `"0-255"`. Defaults to `"0-1"`.
        mean: Per-channel (or one) value subtracted after scaling, in the range's units.
            Defaults to `None`.
        std: Per-channel (or one) value divided by after the mean. Defaults to `None`.
        source: Where the choice came from (`"default"`, `"given"`, or the model layer it
            was read from). Defaults to `"given"`.

    Raises:
        ValueError: For an unknown range or a zero/negative `std`.
    """

    input_range: str = "0-1"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = "given"

    def __post_init__(self):
        if self.input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {INPUT_RANGES}, got "
                             f"{self.input_range!r}.")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in np.atleast_1d(value)))
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be > 0, got {self.std}.")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Images in [0, 1] as the model takes them (float32)."""
        scale, offset = _SCALE[self.input_range]
        out = np.asarray(x, np.float32) * scale + offset
        if self.mean is not None:
            out = out - np.asarray(self.mean, np.float32)
        if self.std is not None:
            out = out / np.asarray(self.std, np.float32)
        return out.astype(np.float32)

    def bounds(self) -> tuple[float, float]:
        """The lowest and highest value an image can have after `apply`."""
        channels = max(len(self.mean or ()), len(self.std or ()), 1)
        corners = self.apply(np.repeat(np.array([[0.0], [1.0]], np.float32), channels, 1))
        return float(corners.min()), float(corners.max())

    def describe(self) -> str:
        text = f"images scaled to {self.input_range}"
        if self.mean is not None or self.std is not None:
            text += f", mean {self.mean or 0}, std {self.std or 1}"
        return f"{text} ({self.source})"

    @classmethod
    def from_model(cls, model: Any) -> "Preprocessing | None":
        """The range a model expects, read from its first layer when that is a `Rescaling`
        (`1/255` or `1/127.5` means 0-255 images; `(2, -1)` means [0, 1]) or a
        `Normalization` (statistics of 0-255 images mean 0-255); else None."""
        import keras

        from tfcompress import _graph

        first = next((layer for layer in _graph.all_layers(model)
                      if not isinstance(layer, (keras.layers.InputLayer, keras.Model))), None)
        if isinstance(first, keras.layers.Rescaling):
            scale = float(np.mean(np.atleast_1d(first.scale)))
            if scale < 0.05:  # 1/255, 1/127.5: the model rescales 0-255 images itself
                return cls("0-255", source=f"read from the model's layer {first.name!r}")
            if abs(scale - 2.0) < 1e-6:
                return cls("0-1", source=f"read from the model's layer {first.name!r}")
        if isinstance(first, keras.layers.Normalization) and first.built:
            mean = float(np.mean(keras.ops.convert_to_numpy(first.mean)))
            if mean > 2.0:
                return cls("0-255", source=f"read from the model's layer {first.name!r}")
        return None


def as_preprocessing(value: Any) -> Preprocessing | None:
    """`None`, a `Preprocessing`, or one made from an input-range name."""
    if value is None or isinstance(value, Preprocessing):
        return value
    if isinstance(value, str):
        return Preprocessing(value)
    raise TypeError(f"preprocessing must be a Preprocessing or one of {INPUT_RANGES}, got "
                    f"{type(value).__name__}.")
