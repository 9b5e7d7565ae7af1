"""Teacher-student knowledge distillation, built on `keras.distillation`."""

from tfcompress.distillation._distiller import Distiller
from tfcompress.distillation._fit import DistillResult, distill

__all__ = ["DistillResult", "Distiller", "distill"]
