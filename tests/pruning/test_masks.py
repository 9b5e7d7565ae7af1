import numpy as np
import pytest

from tfcompress.pruning import (
    global_magnitude_masks,
    magnitude_mask,
    n_m_mask,
    parse_granularity,
    satisfies_n_m,
)
from tfcompress.pruning._masks import n_m_zeros


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.95])
def test_magnitude_removes_the_smallest_and_keeps_the_largest(sparsity):
    w = np.random.default_rng(0).normal(size=(7, 11, 3)).astype(np.float32)
    mask = magnitude_mask(w, sparsity)
    assert mask.shape == w.shape
    assert int((mask == 0).sum()) == round(sparsity * w.size)
    kept, pruned = np.abs(w[mask == 1]), np.abs(w[mask == 0])
    if pruned.size:
        assert pruned.max() <= kept.min()  # every survivor is at least as large as every victim
    assert mask.ravel()[np.argmax(np.abs(w))] == 1


def test_global_spares_the_layer_with_larger_weights():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0, 0.01, 1000), rng.normal(0, 1.0, 1000)
    m_small, m_large = global_magnitude_masks([small, large], 0.5)
    assert (m_small == 0).sum() + (m_large == 0).sum() == 1000
    assert (m_large == 0).mean() < 0.05 < 0.95 < (m_small == 0).mean()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("axis", [0, -2])
def test_n_m_pattern_keeps_the_largest_in_each_group(n, m, axis):
    w = np.random.default_rng(2).normal(size=(16, 3, 16, 5)).astype(np.float32)
    mask = n_m_mask(w, n, m, axis, zeros_per_group=m - n)
    pruned = w * mask
    assert satisfies_n_m(pruned, n, m, axis)
    assert not satisfies_n_m(w, n, m, axis)
    assert (mask == 0).mean() == pytest.approx(1 - n / m)
    groups = np.moveaxis(np.abs(w), axis, -1).reshape(-1, m)
    kept = np.moveaxis(mask, axis, -1).reshape(-1, m)
    for g, k in zip(groups, kept, strict=True):
        assert np.sort(g)[-n:].tolist() == np.sort(g[k == 1]).tolist()


def test_n_m_short_trailing_group_keeps_at_most_n():
    w = np.arange(1.0, 7.0)  # groups of 4: [1,2,3,4], [5,6]
    mask = n_m_mask(w, 2, 4, 0, zeros_per_group=2)
    assert mask.tolist() == [0, 0, 1, 1, 1, 1]
    w1 = np.array([5.0])  # a single weight (e.g. a 1-channel input) is kept
    assert n_m_mask(w1, 2, 4, 0, 2).tolist() == [1.0]


def test_n_m_zeros_ramps_and_caps():
    assert [n_m_zeros(s, 2, 4) for s in (0.0, 0.24, 0.25, 0.5, 0.9)] == [0, 0, 1, 2, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("unstructured", "unstructured"), ("2:4", "2:4"), (" 1:8", "1:8")],
)
def test_parse_granularity(text, expected):
    assert str(parse_granularity(text)) == expected


@pytest.mark.parametrize(("text", "match"), [("4:2", "0 < N < M"), ("block", "Unknown")])
def test_parse_granularity_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_granularity(text)
