"""One split of the data, in memory or streamed: the batches that training, calibration,
scoring and the scans read.

Three kinds share one interface:

- `ArrayPart`: NumPy arrays already in memory (built-in sets, `.npz` files, `(x, y)` tuples).
- `FilesPart`: an image folder's files, decoded a batch at a time (memory does not grow with
  the number of images).
- `StreamPart`: what a user streams: a `tf.data.Dataset`, a `keras.utils.PyDataset` or a
  function that returns a fresh iterable of batches. Its batches are taken as they come (the
  user's own preprocessing and batching); each is checked as it is read.
"""

import contextlib
import hashlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from tfcompress._io import fingerprint as content_hash

# Larger images than this are refused before they are decoded (a 16k x 16k image already
# takes 768 MB as RGB floats); every image is resized to one size as it is read.
MAX_IMAGE_PIXELS = 64_000_000
STREAM_TYPES = "a tf.data.Dataset, a keras.utils.PyDataset or a function returning batches"


class Part:
    """Inputs and targets of one split. Subclasses say how the batches are made."""

    name: str = "arrays"

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, Any]]:
        """`(x, y)` NumPy batches in a fixed order (`y` is `None` without targets)."""
        raise NotImplementedError

    @property
    def size(self) -> int | None:
        """The number of samples, or `None` when only reading the stream would tell."""
        raise NotImplementedError

    @property
    def in_memory(self) -> bool:
        return False

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch at `batch_size` (a stream's own batches are counted)."""
        return math.ceil(self.size / batch_size)

    def fit_args(self, batch_size: int, seed: int = 0) -> dict:
        """The data arguments of `model.fit` for one training run over this part."""
        raise NotImplementedError

    def with_targets(self, y: np.ndarray) -> "Part | None":
        """The same samples with `y` (one row per sample, in `batches` order) as targets, or
        `None` for a part that is not read the same way twice (a stream)."""
        return None

    def fingerprint(self) -> str:
        """What identifies this part's content, for resuming a run."""
        raise NotImplementedError

    def describe(self) -> str:
        """How many samples, in words."""
        return f"{self.size:,} images" if self.size is not None else "a stream"

    def head(self, n: int | None = None, batch_size: int = 256
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """The first `n` samples (all with `None`) as arrays."""
        xs, ys = [], []
        count = 0
        for x, y in self.batches(batch_size if n is None else min(n, batch_size)):
            xs.append(x)
            ys.append(y)
            count += len(x)
            if n is not None and count >= n:
                break
        if not xs:
            raise ValueError(f"{self.name} yielded no samples.")
        x = np.concatenate(xs)[:n]
        y = None if ys[0] is None else np.concatenate(ys)[:n]
        return x, y

    def split(self, fraction: float, seed: int) -> "tuple[Part, Part]":
        """`(rest, held_out)`: a stratified share of each class set aside."""
        raise ValueError(
            f"{self.name} is a stream, which tfcompress cannot split into training and "
            "validation images without reading it whole. Pass the validation images "
            "separately (Python: val=...; command line: --val).")

    def label_max(self) -> int | None:
        """The largest class label (from the first batch for a stream); `None` when the
        targets are not class labels (e.g. images for an autoencoder)."""
        raise NotImplementedError

    def classes_present(self) -> set[int] | None:
        """The class labels this part holds, or `None` when only reading a stream whole would
        tell, or the targets are not class labels."""
        return None


def class_ids(y: Any) -> np.ndarray:
    """Class indices of a batch of labels: integers, or one-hot rows (argmax)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(len(y))


def label_max(y: Any) -> int | None:
    """The largest class index in `y`, or `None` if `y` does not hold class labels."""
    if y is None or not np.size(y):
        return None
    y = np.asarray(y)
    one_hot = y.ndim == 2 and y.shape[1] > 1 and bool(np.isin(y, (0, 1)).all())
    if y.dtype.kind not in "iufb" or (y.ndim > 1 and not one_hot and y.shape[1:] != (1,)):
        return None
    if not one_hot and not np.all(np.mod(y, 1) == 0):
        return None
    return int(np.max(class_ids(y)))


class ArrayPart(Part):
    """Samples held in NumPy arrays."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, name: str = "arrays"):
        self.x, self.y, self.name = x, y, name

    @property
    def size(self) -> int:
        return len(self.x)

    @property
    def in_memory(self) -> bool:
        return True

    @property
    def element_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, Any]]:
        for start in range(0, len(self.x), batch_size):
            yield (self.x[start : start + batch_size],
                   None if self.y is None else self.y[start : start + batch_size])

    def head(self, n: int | None = None, batch_size: int = 256):
        if n is None or n >= len(self.x):
            return self.x, self.y
        return self.x[:n], None if self.y is None else self.y[:n]

    def fit_args(self, batch_size: int, seed: int = 0) -> dict:
        return {"x": self.x, "y": self.y, "batch_size": batch_size, "shuffle": True}

    def with_targets(self, y: np.ndarray) -> "ArrayPart":
        return ArrayPart(self.x, y, self.name)

    def fingerprint(self) -> str:
        return content_hash(self.x, self.y)

    def label_max(self) -> int | None:
        return label_max(self.y)

    def classes_present(self) -> set[int] | None:
        if label_max(self.y) is None:
            return None
        return {int(c) for c in np.unique(class_ids(self.y))}

    def split(self, fraction: float, seed: int) -> "tuple[ArrayPart, ArrayPart]":
        rest, held = stratified(self.y, fraction, seed)
        return (ArrayPart(self.x[rest], self.y[rest], self.name),
                ArrayPart(self.x[held], self.y[held], self.name))


class FilesPart(Part):
    """An image folder's files with their labels, decoded one batch at a time.

    Every image is read as `mode` ("L", "RGB" or "RGBA"), resized to `image_size` (bilinear)
    and scaled to [0, 1], then put through `preprocessing` (if any): the same pixels the
    in-memory loader made.
    """

    def __init__(self, files: tuple[str, ...], labels: np.ndarray, image_size: tuple[int, int],
                 mode: str, preprocessing: Any = None, name: str = "images"):
        labels = np.asarray(labels)
        self.files = tuple(files)
        # class labels, or other targets with one row per image (boxes for a detector)
        self.labels = labels.astype(np.int32 if labels.ndim == 1 else np.float32)
        self.image_size, self.mode = tuple(image_size), mode
        self.preprocessing, self.name = preprocessing, name

    @property
    def size(self) -> int:
        return len(self.files)

    @property
    def element_shape(self) -> tuple[int, ...]:
        return (*self.image_size, 1 if self.mode == "L" else len(self.mode))

    def read(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """The images and labels at `indices`."""
        x = np.empty((len(indices), *self.element_shape), np.float32)
        for row, i in enumerate(indices):
            x[row] = read_image(self.files[i], self.image_size, self.mode).reshape(x.shape[1:])
        x /= 255.0
        if self.preprocessing is not None:
            x = self.preprocessing.apply(x)
        return x, self.labels[np.asarray(indices, dtype=np.int64)]

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, Any]]:
        for start in range(0, len(self.files), batch_size):
            yield self.read(range(start, min(start + batch_size, len(self.files))))

    def fit_args(self, batch_size: int, seed: int = 0) -> dict:
        return {"x": _file_batches(self, batch_size, seed), "shuffle": False}  # shuffled there

    def fingerprint(self) -> str:
        """The files' names and contents (every byte), labels and how they are read."""
        h = hashlib.blake2b(digest_size=12)
        for f in self.files:
            h.update(f"{f}\0".encode())
            with open(f, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023
                    h.update(block)
            h.update(b"\0")
        prep = None if self.preprocessing is None else self.preprocessing.describe()
        return content_hash(h.hexdigest(), self.labels, self.image_size, self.mode, prep)

    def split(self, fraction: float, seed: int) -> "tuple[FilesPart, FilesPart]":
        rest, held = stratified(self.labels, fraction, seed)
        return self.subset(rest), self.subset(held)

    def with_targets(self, y: np.ndarray) -> "FilesPart":
        part = self.subset(range(len(self.files)))
        part.labels = np.asarray(y)  # read() takes its rows by index
        return part

    def subset(self, indices: Any) -> "FilesPart":
        return FilesPart(tuple(self.files[i] for i in indices), self.labels[indices],
                         self.image_size, self.mode, self.preprocessing, self.name)

    def label_max(self) -> int | None:
        return label_max(self.labels)

    def classes_present(self) -> set[int] | None:
        if label_max(self.labels) is None:
            return None
        return {int(c) for c in np.unique(class_ids(self.labels))}


def _file_batches(part: FilesPart, batch_size: int, seed: int):
    """A folder's images for `model.fit` as a `keras.utils.PyDataset`, in a new seeded order
    every epoch, with two threads decoding ahead of training. The class is made here rather
    than at import: `tfcompress.data` loads without Keras (the CLI's `--help` must stay light).
    """
    import keras

    class FileBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=2, use_multiprocessing=False, max_queue_size=4)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(part.size)

        def __len__(self) -> int:
            return math.ceil(part.size / batch_size)

        def __getitem__(self, index: int):
            return part.read(self.order[index * batch_size:(index + 1) * batch_size])

        def on_epoch_end(self):
            self.order = self.rng.permutation(part.size)

    return FileBatches()


@contextlib.contextmanager
def opened_image(file: str) -> Iterator[Any]:
    """The PIL image in `file`, refused with one line when it cannot be read or is larger
    than `MAX_IMAGE_PIXELS` (checked from the header, before any pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{file} is {im.width} x {im.height} pixels, more than tfcompress reads "
                    f"({MAX_IMAGE_PIXELS:,}). Resize it or remove it from the folder.")
            yield im
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(
            f"Could not read the image {file} ({e}). Remove or replace that file.") from None


def read_image(file: str, image_size: tuple[int, int] | None, mode: str) -> np.ndarray:
    """One image as a float32 array of 0-255 values, in `mode`, resized to `image_size`."""
    from PIL import Image

    with opened_image(file) as im:
        im = im.convert(mode)
        if image_size is not None and (im.height, im.width) != tuple(image_size):
            im = im.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32)


def is_stream(data: Any) -> bool:
    """True for a stream: a tf.data.Dataset, a PyDataset, a function returning batches, or
    a generator (which `StreamPart` refuses: it can be read only once)."""
    import types

    return (hasattr(data, "element_spec") or _is_py_dataset(data)
            or isinstance(data, types.GeneratorType)
            or (callable(data) and not isinstance(data, type)))


def _is_py_dataset(data: Any) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover (keras is a core dependency)
        return False
    return isinstance(data, keras.utils.PyDataset)


class StreamPart(Part):
    """A user's stream of `(x, y)` (or `x`) batches: a `tf.data.Dataset`, a
    `keras.utils.PyDataset`, or a function that returns a new iterable of batches each time
    it is called (a generator function). Batches are taken as they come: the stream's own
    batch size and preprocessing. Every batch is checked against the first: same shape per
    sample, real numbers, finite values; the first is checked against what the model takes.
    """

    def __init__(self, source: Any, name: str | None = None):
        import types

        if isinstance(source, types.GeneratorType):
            raise TypeError(
                "A generator can be read only once, and tfcompress reads the data several "
                "times (each epoch, then scoring). Pass the function that makes it (e.g. "
                "data=make_batches, not make_batches()), a tf.data.Dataset or a PyDataset.")
        if not is_stream(source):
            raise TypeError(f"A stream must be {STREAM_TYPES}; got {type(source).__name__}.")
        self.source = source
        self.name = name or _stream_name(source)
        self._first: tuple[np.ndarray, Any] | None = None
        self._fingerprint: str | None = None
        if hasattr(source, "element_spec"):
            import tensorflow as tf

            card = int(source.cardinality())
            if card == int(tf.data.INFINITE_CARDINALITY):
                raise ValueError(
                    f"{self.name} never ends (it repeats): tfcompress reads it once per epoch "
                    "and to score. Remove the .repeat().")

    @property
    def size(self) -> int | None:
        return None

    def _raw(self) -> Iterator[Any]:
        src = self.source
        if hasattr(src, "element_spec"):
            return iter(src)
        if _is_py_dataset(src):
            return (src[i] for i in range(len(src)))
        return iter(src())

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, Any]]:
        first = None
        for index, raw in enumerate(self._raw()):
            x, y = self._as_batch(raw, index)
            if first is None:
                first = (x, y)
            else:
                self._check_like(first, x, y, index)
            yield x, y
        if first is None:
            raise ValueError(f"{self.name} yielded no batches. Pass a stream with data.")

    def first_batch(self) -> tuple[np.ndarray, Any]:
        if self._first is None:
            for batch in self.batches():
                self._first = batch
                break
        return self._first

    @property
    def element_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.first_batch()[0].shape[1:])

    def num_batches(self, batch_size: int) -> int:
        src = self.source
        if hasattr(src, "element_spec") and int(src.cardinality()) >= 0:
            return int(src.cardinality())
        if _is_py_dataset(src):
            return len(src)
        return sum(1 for _ in self._raw())

    def fit_args(self, batch_size: int, seed: int = 0) -> dict:
        src = self.source
        if (hasattr(src, "element_spec") and _fixed_shapes(src.element_spec)) or \
                _is_py_dataset(src):
            return {"x": src, "shuffle": False}  # the stream shuffles itself, if it does
        # A function's batches, or a tf.data stream whose shapes are not fixed (a
        # concatenation of two image sizes): read through the per-batch checks.
        import tensorflow as tf

        x, y = self.first_batch()
        spec = tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype))
        if y is not None:
            spec = (spec, tf.TensorSpec((None, *np.shape(y)[1:]), tf.as_dtype(y.dtype)))
        return {"x": tf.data.Dataset.from_generator(
            lambda: (b if b[1] is not None else b[0] for b in self.batches()),
            output_signature=spec), "shuffle": False}

    def fingerprint(self) -> str:
        """The content of one whole pass over the stream, in any order: each sample's inputs
        and target are hashed, and the sorted hashes with the count identify the stream. A
        stream that augments at random reads differently each time, so its run cannot be
        resumed."""
        if self._fingerprint is None:
            digests = []
            for x, y in self.batches():
                for i in range(len(x)):
                    digests.append(content_hash(x[i], None if y is None else np.asarray(y[i])))
            x, y = self.first_batch()
            digests.sort()
            self._fingerprint = content_hash(
                f"stream of {len(digests)} samples", x.shape[1:], str(x.dtype),
                None if y is None else (np.shape(y)[1:], str(np.asarray(y).dtype)),
                "".join(digests))
        return self._fingerprint

    def label_max(self) -> int | None:
        return label_max(self.first_batch()[1])

    def _as_batch(self, raw: Any, index: int) -> tuple[np.ndarray, Any]:
        if isinstance(raw, dict) or (isinstance(raw, (tuple, list)) and not 1 <= len(raw) <= 3):
            raise ValueError(
                f"{self.name}: batch {index} is a {type(raw).__name__}; expected (images, "
                "labels) or images alone.")
        x, y = (raw[0], raw[1] if len(raw) > 1 else None) if isinstance(raw, (tuple, list)) \
            else (raw, None)
        x = _numpy(x)
        what = f"{self.name}: batch {index}"
        if x.dtype.kind not in "fiu" or x.ndim < 2:
            raise ValueError(
                f"{what} holds {x.dtype} inputs of shape {x.shape}; expected a batch of real "
                "numbers, shape (batch, ...). Decode and cast the images in the stream.")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError(f"{what} holds NaN or infinite inputs. Remove or repair them.")
        if y is not None:
            y = _numpy(y)
            if y.ndim == 0:
                raise ValueError(
                    f"{what} is one sample (inputs of shape {x.shape}, a single target), "
                    "not a batch. Batch the stream, e.g. dataset.batch(64).")
            if y.dtype.kind not in "fiub" or len(y) != len(x):
                raise ValueError(
                    f"{what} has {len(y)} targets of dtype {y.dtype} for {len(x)} inputs; "
                    "expected one numeric target (label) per input.")
        return x.astype(np.float32, copy=False), y

    def _check_like(self, first: tuple, x: np.ndarray, y: Any, index: int) -> None:
        if x.shape[1:] != first[0].shape[1:] or (y is None) != (first[1] is None) or (
                y is not None and np.shape(y)[1:] != np.shape(first[1])[1:]):
            raise ValueError(
                f"{self.name}: batch {index} has inputs of shape {x.shape[1:]}"
                f"{'' if y is None else f' and targets of shape {np.shape(y)[1:]}'} per "
                f"sample, but batch 0 had {first[0].shape[1:]}"
                f"{'' if first[1] is None else f' and {np.shape(first[1])[1:]}'}. Every "
                "batch must have the same shapes.")


def _fixed_shapes(spec: Any) -> bool:
    """True when every tensor of a tf.data element spec has a known size past the batch."""
    import tensorflow as tf

    return all(s.shape.rank is not None and None not in s.shape.as_list()[1:]
               for s in tf.nest.flatten(spec) if hasattr(s, "shape"))


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def _stream_name(source: Any) -> str:
    if hasattr(source, "element_spec"):
        return "the tf.data stream"
    if _is_py_dataset(source):
        return f"the PyDataset {type(source).__name__}"
    return f"the stream {getattr(source, '__name__', type(source).__name__)}()"


def stratified(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(rest, held_out)` indices: `fraction` of each class held out, both shuffled (of all
    samples, when the targets are not class labels)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    rng = np.random.default_rng(seed)
    if label_max(y) is None:  # targets that are not class labels: a plain random share
        order = rng.permutation(len(y))
        cut = max(1, round(fraction * len(y)))
        return order[cut:], order[:cut]
    y = class_ids(y)
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        held.append(idx[: max(1, round(fraction * len(idx)))])
    mask = np.zeros(len(y), dtype=bool)
    mask[np.concatenate(held)] = True
    rest, out = np.flatnonzero(~mask), np.flatnonzero(mask)
    rng.shuffle(rest)
    rng.shuffle(out)
    return rest, out


