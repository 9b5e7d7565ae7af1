"""Data for compression and evaluation: built-in sets, `.npz` files and image folders."""

from tfcompress.data._loaders import BUILTIN_NAMES, Dataset, as_arrays, load, split
from tfcompress.data._preprocess import Preprocessing
from tfcompress.data._shapes import SHAPE_CLASSES, make_shapes

__all__ = ["BUILTIN_NAMES", "SHAPE_CLASSES", "Dataset", "Preprocessing", "as_arrays", "load",
           "make_shapes", "split"]
