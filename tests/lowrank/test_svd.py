import numpy as np
import pytest

from tfcompress.lowrank import _svd

SHAPES = {"dense": (48, 32), "channel": (3, 3, 8, 16), "spatial": (3, 5, 8, 16)}


def _compose(f: _svd.Factors, view: str, shape) -> np.ndarray:
    """Rebuilds the kernel the two factors compute (inverse of `as_matrix`)."""
    if view == "dense":
        return f.first @ f.second
    kh, kw, cin, cout = shape
    if view == "channel":
        return (f.first.reshape(-1, f.first.shape[-1]) @ f.second.reshape(-1, cout)
                ).reshape(kh, kw, cin, cout)
    a = f.first[:, 0].reshape(kh * cin, -1)  # (kh, cin, r)
    b = f.second[0].transpose(1, 0, 2).reshape(-1, kw * cout)  # (r, kw, cout)
    return (a @ b).reshape(kh, cin, kw, cout).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("view", _svd.VIEWS)
def test_full_rank_split_is_exact_and_truncation_is_optimal(view):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=SHAPES[view]).astype(np.float32)
    full = min(_svd.as_matrix(kernel, view).shape)
    exact = _svd.split(kernel, view, full)
    np.testing.assert_allclose(_compose(exact, view, kernel.shape), kernel, atol=1e-4)
    assert exact.energy == pytest.approx(1.0)
    # Eckart-Young: the rank-r error is the energy of the dropped singular values.
    r = full // 3
    approx = _svd.split(kernel, view, r)
    s = _svd.singular_values(kernel, view)
    err = np.sum((_compose(approx, view, kernel.shape) - kernel) ** 2)
    assert err == pytest.approx(np.sum(s[r:] ** 2), rel=1e-3)
    assert approx.energy == pytest.approx(np.sum(s[:r] ** 2) / np.sum(s**2), rel=1e-6)


def test_choose_rank():
    s = np.array([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1 of 22
    assert _svd.choose_rank(s, energy=16 / 22) == 1
    assert _svd.choose_rank(s, energy=0.75) == 2
    assert _svd.choose_rank(s, energy=1.0) == 4
    assert _svd.choose_rank(s, rank_ratio=0.5) == 2
    assert _svd.choose_rank(s, rank_ratio=0.01) == 1
    assert _svd.choose_rank(s, rank=9) == 4
    with pytest.raises(ValueError, match="exactly one"):
        _svd.choose_rank(s, rank_ratio=0.5, energy=0.5)
    with pytest.raises(ValueError, match="energy"):
        _svd.choose_rank(s, energy=1.5)


def test_break_even_rank():
    assert _svd.break_even_rank((100, 100), "dense") == 49  # 49 * 200 < 10,000 <= 50 * 200
    assert _svd.factor_params((3, 3, 32, 64), "channel", 10) == 10 * (288 + 64)
    assert _svd.break_even_rank((1, 1, 2, 2), "channel") == 0
