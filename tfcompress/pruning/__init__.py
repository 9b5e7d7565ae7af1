"""Magnitude pruning for Keras 3: schedules, a callback for `model.fit`, reports, and channel
pruning with `shrink` to make the model physically smaller."""

from tfcompress.pruning._callback import SCOPES, Pruning
from tfcompress.pruning._channels import (
    CRITERIA,
    ChannelGraph,
    ChannelGroup,
    channel_keep,
    global_channel_keep,
    register_layer,
)
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
from tfcompress.pruning._shrink import LayerChannels, ShrinkReport, shrink
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

__all__ = [
    "CRITERIA",
    "SCOPES",
    "SUPPORTED_LAYERS",
    "ChannelGraph",
    "ChannelGroup",
    "ConstantSparsity",
    "LayerChannels",
    "PolynomialDecay",
    "Pruning",
    "PruneResult",
    "PruningSchedule",
    "ShrinkReport",
    "SparsityReport",
    "WeightSparsity",
    "channel_keep",
    "global_channel_keep",
    "global_magnitude_masks",
    "magnitude_mask",
    "n_m_mask",
    "parse_granularity",
    "prunable_targets",
    "prune",
    "register_layer",
    "satisfies_n_m",
    "shrink",
    "sparsity_report",
]
