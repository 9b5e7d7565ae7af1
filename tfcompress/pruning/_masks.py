"""Mask math: which weights to zero for a target sparsity. No Keras state here.

A mask is a float array of the weight's shape holding 1 where the weight is kept and 0 where it
is pruned. Every criterion removes the weights of smallest magnitude and keeps the largest.
The NumPy functions are the reference; `magnitude_masks_on_device` computes the same masks with
`keras.ops` where the weights live, which is what the `Pruning` callback runs at every update.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from keras import ops


@dataclass(frozen=True)
class Granularity:
    """A parsed `granularity` argument: `"unstructured"`, `"N:M"` or `"channel"`."""

    kind: str
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind != "n:m" else f"{self.n}:{self.m}"

    @property
    def pattern_sparsity(self) -> float:
        """For N:M, the sparsity the pattern fixes: `1 - N/M`."""
        return 1.0 - self.n / self.m if self.kind == "n:m" else 0.0


GRANULARITIES = ("unstructured", "N:M (e.g. '2:4')", "channel")


def parse_granularity(text: str) -> Granularity:
    """Parses `"unstructured"`, `"channel"` or `"N:M"` (0 < N < M)."""
    if not isinstance(text, str):
        raise TypeError(f"granularity must be a string, got {type(text).__name__}.")
    if text in ("unstructured", "channel"):
        return Granularity(text)
    match = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if match:
        n, m = int(match.group(1)), int(match.group(2))
        if 0 < n < m:
            return Granularity("n:m", n, m)
        raise ValueError(f"granularity {text!r}: N:M needs 0 < N < M, e.g. '2:4'.")
    raise ValueError(f"Unknown granularity {text!r}; expected one of {GRANULARITIES}.")


def _num_to_prune(size: int, sparsity: float) -> int:
    return int(min(size, max(0, round(sparsity * size))))


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Zeroes exactly `round(sparsity * size)` weights, those of smallest magnitude.

    Examples:
        >>> magnitude_mask(np.array([0.1, -3.0, 0.5, 2.0]), 0.5).tolist()
        [0.0, 1.0, 0.0, 1.0]
    """
    k = _num_to_prune(weights.size, sparsity)
    mask = np.ones(weights.size, dtype=weights.dtype)
    if k > 0:
        mask[np.argpartition(np.abs(weights).ravel(), k - 1)[:k]] = 0.0
    return mask.reshape(weights.shape)


def global_magnitude_masks(
    weights: Sequence[np.ndarray], sparsity: float
) -> list[np.ndarray]:
    """One magnitude ranking across all arrays: the smallest weights overall are zeroed.

    Arrays whose weights are larger keep more of them, so sensitive layers are spared.
    """
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    k = _num_to_prune(flat.size, sparsity)
    keep = np.ones(flat.size, dtype=np.float32)
    if k > 0:
        keep[np.argpartition(flat, k - 1)[:k]] = 0.0
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start : start + w.size].reshape(w.shape).astype(w.dtype))
        start += w.size
    return masks


def magnitude_masks_on_device(weights: Sequence[Any], sparsity: float,
                              scope: str = "layer") -> list[Any]:
    """`magnitude_mask` (per weight) or `global_magnitude_masks` (`scope="global"`) computed
    with `keras.ops` on the weights' own device, without copying them to the host.

    The smallest magnitudes are found with a top-k, so exactly `round(sparsity * size)` weights
    are zeroed (ties broken by position).

    Examples:
        >>> import numpy as np
        >>> [m] = magnitude_masks_on_device([np.array([0.1, -3.0, 0.5, 2.0])], 0.5)
        >>> ops.convert_to_numpy(m).tolist()
        [0.0, 1.0, 0.0, 1.0]
    """
    if scope == "global":
        flat = ops.concatenate([ops.reshape(ops.abs(ops.cast(w, "float32")), (-1,))
                                for w in weights])
        keep = _keep_largest(flat, _num_to_prune(int(flat.shape[0]), sparsity))
        masks, start = [], 0
        for w in weights:
            size = int(np.prod(w.shape))
            masks.append(ops.reshape(keep[start : start + size], w.shape))
            start += size
        return masks
    return [
        ops.reshape(_keep_largest(ops.reshape(ops.abs(ops.cast(w, "float32")), (-1,)),
                                  _num_to_prune(int(np.prod(w.shape)), sparsity)), w.shape)
        for w in weights
    ]


def _keep_largest(flat: Any, k: int) -> Any:
    """A float32 vector of ones with zeros at the `k` smallest entries of `flat`."""
    size = int(flat.shape[0])
    if k <= 0:
        return ops.ones((size,), "float32")
    _, smallest = ops.top_k(-flat, k, sorted=False)
    return 1.0 - ops.scatter(ops.expand_dims(smallest, -1), ops.ones((k,), "float32"), (size,))


def n_m_mask(weights: np.ndarray, n: int, m: int, axis: int, zeros_per_group: int) -> np.ndarray:
    """Zeroes the `zeros_per_group` smallest weights in each group of `m` along `axis`.

    With `zeros_per_group = m - n`, every group of `m` consecutive weights along `axis` keeps at
    most `n` non-zeros (the N:M pattern of sparse tensor cores). A trailing group shorter than
    `m` keeps at most `n` as well.
    """
    if not 0 <= zeros_per_group <= m - n:
        raise ValueError(f"zeros_per_group must be in [0, {m - n}], got {zeros_per_group}.")
    moved = np.moveaxis(np.abs(weights), axis, -1)
    length = moved.shape[-1]
    pad = (-length) % m
    # Padding sorts before every real weight, so a short group spends its zeros on padding first
    # and still ends with at most `n` real non-zeros.
    padded = np.concatenate([moved, np.full(moved.shape[:-1] + (pad,), -1.0)], axis=-1)
    groups = padded.reshape(moved.shape[:-1] + (-1, m))
    keep = np.ones_like(groups, dtype=weights.dtype)
    if zeros_per_group:
        order = np.argsort(groups, axis=-1, kind="stable")[..., :zeros_per_group]
        np.put_along_axis(keep, order, 0.0, axis=-1)
    keep = keep.reshape(moved.shape[:-1] + (length + pad,))[..., :length]
    return np.moveaxis(keep, -1, axis)


def n_m_zeros(sparsity: float, n: int, m: int) -> int:
    """How many of each group's `m` weights to zero for a target `sparsity`, capped at `m - n`."""
    return int(min(m - n, np.floor(sparsity * m + 1e-6)))


def satisfies_n_m(weights: np.ndarray, n: int, m: int, axis: int) -> bool:
    """True when every group of `m` consecutive weights along `axis` has at most `n` non-zeros."""
    moved = np.moveaxis(weights != 0, axis, -1)
    pad = (-moved.shape[-1]) % m
    padded = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), dtype=bool)], axis=-1)
    return bool((padded.reshape(moved.shape[:-1] + (-1, m)).sum(axis=-1) <= n).all())
