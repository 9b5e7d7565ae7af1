"""Magnitude pruning for Keras 3: schedules, a callback for `model.fit`, and reports."""

from tfcompress.pruning._callback import SCOPES, Pruning
from tfcompress.pruning._finetune import PruneResult, prune
from tfcompress.pruning._masks import (
    global_magnitude_masks,
    magnitude_mask,
    n_m_mask,
    parse_granularity,
    satisfies_n_m,
)
from tfcompress.pruning._report import SparsityReport, WeightSparsity, sparsity_report
from tfcompress.pruning._selection import SUPPORTED_LAYERS, prunable_targets
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

__all__ = [
    "SCOPES",
    "SUPPORTED_LAYERS",
    "ConstantSparsity",
    "PolynomialDecay",
    "Pruning",
    "PruneResult",
    "PruningSchedule",
    "SparsityReport",
    "WeightSparsity",
    "global_magnitude_masks",
    "magnitude_mask",
    "n_m_mask",
    "parse_granularity",
    "prunable_targets",
    "prune",
    "satisfies_n_m",
    "sparsity_report",
]
