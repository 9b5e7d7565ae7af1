"""Teacher-student knowledge distillation, built on `keras.distillation`."""

from tfcompress.distillation._distiller import Distiller

__all__ = ["Distiller"]
