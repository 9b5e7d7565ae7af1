"""Truncated-SVD math for low-rank factorization: NumPy only, no Keras state.

A weight is viewed as a matrix `M (rows x cols)`, factorized as `M ~= A @ B` with
`A = U_r sqrt(S_r)` and `B = sqrt(S_r) V_r^T` (the balanced split keeps both factors at a
similar scale, which suits int8 quantization of each). Three views:
- dense: a Dense kernel `(in, out)` as is;
- channel: a conv kernel `(kh, kw, cin, cout)` as `(kh*kw*cin, cout)`: a kh x kw conv with r
  filters followed by a 1x1 conv;
- spatial: the same kernel as `(kh*cin, kw*cout)`: a kh x 1 conv with r filters followed by a
  1 x kw conv (Jaderberg et al., 2014). Both are exact when r is the full rank.
"""

from dataclasses import dataclass

import numpy as np

VIEWS = ("dense", "channel", "spatial")


def as_matrix(kernel: np.ndarray, view: str) -> np.ndarray:
    """The 2-D matrix a kernel is factorized as, for `view` in `VIEWS`."""
    if view == "dense":
        return kernel
    kh, kw, cin, cout = kernel.shape
    if view == "channel":
        return kernel.reshape(kh * kw * cin, cout)
    if view == "spatial":
        return kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)
    raise ValueError(f"Unknown view {view!r}; expected one of {VIEWS}.")


def factor_params(shape: tuple[int, ...], view: str, rank: int) -> int:
    """Weights in the two factors at `rank` (biases excluded)."""
    if view == "dense":
        rows, cols = shape
        return rank * (rows + cols)
    kh, kw, cin, cout = shape
    if view == "channel":
        return rank * (kh * kw * cin + cout)
    return rank * (kh * cin + kw * cout)


def break_even_rank(shape: tuple[int, ...], view: str) -> int:
    """The largest rank whose factors hold fewer weights than the kernel (0 if none)."""
    per_rank = factor_params(shape, view, 1)
    size = int(np.prod(shape))
    return max(0, (size - 1) // per_rank)


def choose_rank(
    singular_values: np.ndarray,
    rank_ratio: float | None = None,
    energy: float | None = None,
    rank: int | None = None,
) -> int:
    """The rank for one layer: given, a fraction of the full rank, or by retained energy.

    Args:
        singular_values: Singular values in decreasing order.
        rank_ratio: Keep `round(rank_ratio * full_rank)` (at least 1). Defaults to `None`.
        energy: Keep the fewest values whose squares sum to at least this fraction of the
            total. Defaults to `None`.
        rank: Use this rank (clipped to the full rank). Defaults to `None`.

    Returns:
        A rank between 1 and the full rank.

    Raises:
        ValueError: If none or more than one of the three is given, or one is out of range.
    """
    given = [v is not None for v in (rank_ratio, energy, rank)]
    if sum(given) != 1:
        raise ValueError("Give exactly one of rank_ratio, energy and rank.")
    full = len(singular_values)
    if rank is not None:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}.")
        return min(int(rank), full)
    if rank_ratio is not None:
        if not 0.0 < rank_ratio <= 1.0:
            raise ValueError(f"rank_ratio must be in (0, 1], got {rank_ratio}.")
        return min(full, max(1, round(rank_ratio * full)))
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}.")
    squares = np.asarray(singular_values, dtype=np.float64) ** 2
    total = squares.sum()
    if total == 0:
        return 1
    cumulative = np.cumsum(squares) / total
    return min(full, int(np.searchsorted(cumulative, energy - 1e-12)) + 1)


@dataclass(frozen=True)
class Factors:
    """The two kernels that replace one, and the share of energy they keep."""

    first: np.ndarray
    second: np.ndarray
    energy: float


def singular_values(kernel: np.ndarray, view: str) -> np.ndarray:
    """Singular values of the kernel's matrix view, in decreasing order."""
    return np.linalg.svd(as_matrix(kernel, view).astype(np.float64), compute_uv=False)


def split(kernel: np.ndarray, view: str, rank: int) -> Factors:
    """Splits `kernel` into two kernels whose composition is its best rank-`rank` approximation.

    Returns kernels in Keras layout: `(in, r)` and `(r, out)` for dense; `(kh, kw, cin, r)` and
    `(1, 1, r, cout)` for channel; `(kh, 1, cin, r)` and `(1, kw, r, cout)` for spatial.
    """
    matrix = as_matrix(kernel, view).astype(np.float64)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    a = u[:, :rank] * root
    b = root[:, None] * vt[:rank]
    kept = float((s[:rank] ** 2).sum() / max((s ** 2).sum(), 1e-30))
    dtype = kernel.dtype
    if view == "dense":
        return Factors(a.astype(dtype), b.astype(dtype), kept)
    kh, kw, cin, cout = kernel.shape
    if view == "channel":
        return Factors(a.reshape(kh, kw, cin, rank).astype(dtype),
                       b.reshape(1, 1, rank, cout).astype(dtype), kept)
    first = a.reshape(kh, cin, rank)[:, None]
    second = b.reshape(rank, kw, cout).transpose(1, 0, 2)[None]
    return Factors(first.astype(dtype), second.astype(dtype), kept)
