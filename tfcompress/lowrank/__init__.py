"""Low-rank factorization: Dense and Conv2D layers split in two by a truncated SVD."""

from tfcompress.lowrank._factorize import (
    CONV_MODES,
    SUPPORTED_LAYERS,
    FactorizationReport,
    LayerFactorization,
    factorize,
)

__all__ = [
    "CONV_MODES",
    "SUPPORTED_LAYERS",
    "FactorizationReport",
    "LayerFactorization",
    "factorize",
]
