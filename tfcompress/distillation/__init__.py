"""Teacher-student knowledge distillation, built on `keras.distillation`, and students made
from a teacher."""

from tfcompress.distillation._distiller import Distiller
from tfcompress.distillation._fit import DistillResult, distill
from tfcompress.distillation._student import StudentReport, make_student

__all__ = ["DistillResult", "Distiller", "StudentReport", "distill", "make_student"]
