"""Data for compression and evaluation: built-in sets, `.npz` files, image folders and
streams (`tf.data`, `keras.utils.PyDataset`, generator functions), read batch by batch."""

from tfcompress.data._loaders import (
    BUILTIN_NAMES,
    Dataset,
    as_arrays,
    as_part,
    check_classes,
    load,
    split,
)
from tfcompress.data._parts import ArrayPart, FilesPart, Part, StreamPart
from tfcompress.data._preprocess import Preprocessing
from tfcompress.data._shapes import SHAPE_CLASSES, make_shapes
from tfcompress.data._shapes_detect import make_shapes_detect

__all__ = ["BUILTIN_NAMES", "SHAPE_CLASSES", "ArrayPart", "Dataset", "FilesPart", "Part",
           "Preprocessing", "StreamPart", "as_arrays", "as_part", "check_classes", "load",
           "make_shapes", "make_shapes_detect", "split"]
