"""Post-training quantization with chosen activation ranges (min/max, percentile or MSE).

The converter's own calibration takes each tensor's running min and max: one outlier widens the
range and costs every other value precision. Here the ranges come from statistics of the
activations on calibration data, set on a `quantize_aware` copy of the model, which then exports
to int8 with exactly those ranges and no training at all.
"""

from typing import Any

import keras
import numpy as np

from tfcompress import _legacy
from tfcompress.data import as_arrays
from tfcompress.quantization._equalize import correct_biases, equalize_pairs
from tfcompress.quantization._layers import ActivationQuantizer
from tfcompress.quantization._transform import _quantizers, quantize_aware

METHODS = ("minmax", "percentile", "mse")
_MAX_VALUES = 200_000  # values kept per tensor for the statistics


def _mse_range(values: np.ndarray, num_bits: int) -> tuple[float, float]:
    """The clipping range, among shrinking candidates, with the least quantization error."""
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    levels = 2**num_bits - 1
    best, best_err = (lo, hi), np.inf
    for frac in np.linspace(1.0, 0.3, 36):
        c_lo, c_hi = lo * frac, hi * frac
        if c_hi - c_lo <= 0:
            continue
        scale = (c_hi - c_lo) / levels
        q = np.round((np.clip(values, c_lo, c_hi) - c_lo) / scale) * scale + c_lo
        err = float(np.mean((q - values) ** 2))
        if err < best_err:
            best, best_err = (c_lo, c_hi), err
    return best


def calibrate_ranges(
    model: keras.Model,
    data: Any,
    method: str = "percentile",
    percentile: float = 99.99,
    num_samples: int = 500,
    batch_size: int = 100,
    *,
    per_channel_weights: bool = True,
    weight_bits: Any = 8,
    equalize: bool = False,
    bias_correction: bool = False,
    adaround: bool = False,
) -> keras.Model:
    """A quantization-aware copy of `model` with activation ranges set from calibration data.

    Export the result with `to_tflite(q, path, "int8")`: post-training quantization that uses
    these ranges instead of the converter's min/max.

    Args:
        model: A trained functional or Sequential model (not modified).
        data: Calibration images: an array, `(x, y)`, a `Dataset` or a loader source (train).
        method: `"minmax"`, `"percentile"` (clip at `percentile` and `100 - percentile`) or
            `"mse"` (the clipping range that minimizes the int8 rounding error). Defaults to
            `"percentile"`.
        percentile: For `"percentile"`, in `(50, 100]`. Defaults to `99.99`.
        num_samples: Calibration images used. Defaults to `500`.
        batch_size: Images per forward pass. Defaults to `100`.
        per_channel_weights: Per-output-channel weight scales for convolutions; `False`
            gives per-tensor scales (which some accelerators require). Defaults to `True`.
        weight_bits: 8, 4 (int4 weights, packed in the file) or a dict per layer, as
            `quantize_aware` takes it: post-training int4. Defaults to `8`.
        equalize: Cross-layer equalization before the ranges are set: where a layer's output
            reaches one next weight layer through ReLU, pooling or padding, their channels
            are rescaled to equal weight ranges (the function is unchanged). For per-tensor
            weights and depthwise layers with unequal channels. Defaults to `False`.
        bias_correction: After the ranges are set, each layer's bias takes out the mean error
            its rounded weights cause in its output, measured on the calibration images as
            they reach it in the quantized model. Defaults to `False`.
        adaround: After the ranges are set (and before bias correction), each weight is
            rounded up or down as its layer's output needs rather than to the nearest level
            (AdaRound, Nagel et al. 2020): layer by layer in graph order, a rounding choice
            per weight is fitted so that the layer's output on the calibration images, as
            they reach it in the quantized model, matches the float model's. The ranges
            stay the same. Defaults to `False`.

    Returns:
        A new model with learned (fixed) ranges, ready for int8 export.

    Raises:
        ValueError: For an unknown method or a percentile out of range, or `equalize` on a
            model with no pair of layers to balance (naming a layer and why).
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if method not in METHODS:
        raise ValueError(f"Unknown calibration method {method!r}; expected one of {METHODS}.")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}.")
    q = quantize_aware(model, per_channel_weights=per_channel_weights, weight_bits=weight_bits)
    if equalize:
        equalize_pairs(q)
    x, _ = as_arrays(data, split_name="train", limit=num_samples)
    quantizers = _quantizers(q)
    seen: dict[int, list[np.ndarray]] = {id(qz): [] for qz in quantizers}

    def observer_for(qz: ActivationQuantizer):
        rng = np.random.default_rng(0)

        def observe(values: np.ndarray) -> None:
            flat = values.reshape(-1)
            if flat.size > _MAX_VALUES // 4:
                flat = rng.choice(flat, _MAX_VALUES // 4, replace=False)
            seen[id(qz)].append(flat)

        return observe

    for qz in quantizers:
        qz.observer = observer_for(qz)
    try:
        for start in range(0, len(x), batch_size):
            q(x[start : start + batch_size], training=False)
    finally:
        for qz in quantizers:
            qz.observer = None
    for qz in quantizers:
        values = np.concatenate(seen[id(qz)])
        if method == "minmax":
            lo, hi = float(values.min()), float(values.max())
        elif method == "percentile":
            lo = float(np.percentile(values, 100.0 - percentile))
            hi = float(np.percentile(values, percentile))
        else:
            lo, hi = _mse_range(values, qz.num_bits)
        qz.set_range(lo, hi)
    if adaround:
        from tfcompress.quantization._adaround import adaround as learn_rounding

        learn_rounding(q, x)
    if bias_correction:
        correct_biases(q, x, batch_size)
    return q
