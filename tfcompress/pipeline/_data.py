"""The run's data: training, validation and test parts from what the user passed (arrays,
folders, streams), each read batch by batch and checked against the model."""

from typing import Any

from tfcompress import _training
from tfcompress.data import Dataset, Part, as_part, load
from tfcompress.data._parts import is_stream

HOLD_OUT = 0.1  # the share of training images held out for validation, as Dataset.hold_out


def splits(data: Any, val: Any, seed: int, test: Any = None, model: Any = None,
            preprocessing: Any = None) -> tuple[Dataset, Dataset, dict]:
    """(train + validation as a Dataset whose test part is the validation set, test Dataset,
    where each part's images come from). With `model`, folders are read as it takes them and
    every part is checked against it. Every part is read batch by batch (arrays, a folder's
    files or a user's stream); only a stream cannot be split, so with one `val` is needed."""
    def read(source: Any) -> Dataset:
        if model is None:
            return load(source, seed=seed, preprocessing=preprocessing)
        return _training.load_for(model, source, seed=seed, preprocessing=preprocessing)

    def whole(source: Any) -> tuple[Part, str]:
        """All of a source that is used whole (validation or test data)."""
        if isinstance(source, (tuple, Part)) or is_stream(source):
            part = as_part(source)
            return part, "(x, y) arrays" if isinstance(source, tuple) else part.name
        d = read(source)
        return d.part("all"), d.name

    streamed = is_stream(data)
    if streamed:
        tr = as_part(data, "train")
        ds = Dataset.from_parts(tr, tr, (), tr.name)
    else:
        ds = read(data)
    name = ds.name
    te = None
    if test is None and not streamed:
        te, test_from = ds.test, f"{name}: its test part"
        tr, train_from = ds.train, f"{name}: its training part"
    elif test is None:
        tr, train_from = ds.train, f"{name}: all of it"
    else:  # --data is all for training; --test only for the reported figures
        te, test_name = whole(test)
        test_from = f"{test_name}: all of it, used for nothing else"
        tr, train_from = (ds.train if streamed else ds.part("all")), f"{name}: all of it"
    if val is None:
        tr, va = tr.split(HOLD_OUT, seed)
        val_from = f"{name}: training images held out (seed {seed})"
        train_from += " less the validation images"
    else:
        va, val_name = whole(val)
        val_from = f"{val_name}: all of it"
    if te is None:  # a training stream and no test data: the validation data scores
        te, test_from = va, f"{val_from}, the validation data"
    fit = Dataset.from_parts(tr, va, ds.class_names, f"{name} (train/val)", ds.preprocessing)
    test_ds = Dataset.from_parts(te, te, ds.class_names, name, ds.preprocessing)
    if model is not None:
        for part in (fit, test_ds):
            _training.check_data_fits(model, part)
    sources = {"train": f"{train_from} ({tr.describe()})",
               "validation": f"{val_from} ({va.describe()})",
               "test": f"{test_from} ({te.describe()})",
               "input": (ds.preprocessing.describe() if ds.preprocessing is not None
                         else "as the stream yields them" if streamed or is_stream(val)
                         else "images as loaded: [0, 1] from images and built-in sets")}
    return fit, test_ds, sources
