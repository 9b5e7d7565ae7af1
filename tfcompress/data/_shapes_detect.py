"""`shapes-detect`: a procedural, seeded detection set. Each image holds one to several
objects of the `shapes` classes, at random sizes and places, over the same cluttered
backgrounds; objects may overlap (the later one is drawn on top), and an object hidden for
more than half of its area is not labelled."""

import numpy as np

from tfcompress.data._shapes import SHAPE_CLASSES, _object_mask, background

MAX_OBJECTS = 4
MIN_VISIBLE = 0.5  # share of an object's area that must stay visible for it to be labelled


def make_shapes_detect(num_samples: int = 3000, image_size: int = 96, seed: int = 0,
                       max_objects: int = MAX_OBJECTS, min_size: float = 0.12,
                       max_size: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Generates the `shapes-detect` set.

    Args:
        num_samples: Number of images. Defaults to `3000`.
        image_size: Height and width in pixels (at least 32). Defaults to `96`.
        seed: Seed of the generator; the same seed gives the same images. Defaults to `0`.
        max_objects: Most objects in one image (each image has 1 to this many). Defaults
            to `4`.
        min_size: Smallest object, as a share of the image's side. Defaults to `0.12`.
        max_size: Largest object, as a share of the image's side. Defaults to `0.45`.

    Returns:
        `(x, y)`: float32 images in `[0, 1]`, `(num_samples, image_size, image_size, 3)`, and
        float32 targets `(num_samples, max_objects, 5)`: rows `[class, ymin, xmin, ymax,
        xmax]` (normalized, class indexing `SHAPE_CLASSES`), padded with rows of `-1`.

    Raises:
        ValueError: For a non-positive count, an image below 32 pixels or bad sizes.

    Examples:
        >>> x, y = make_shapes_detect(4, image_size=48, seed=1)
        >>> x.shape, y.shape, bool((y[:, 0, 0] >= 0).all())
        ((4, 48, 48, 3), (4, 4, 5), True)
    """
    if num_samples <= 0 or max_objects < 1:
        raise ValueError(f"num_samples and max_objects must be positive, got {num_samples} "
                         f"and {max_objects}.")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}.")
    if not 0.0 < min_size <= max_size <= 1.0:
        raise ValueError(f"Need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}.")
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    x = np.empty((num_samples, s, s, 3), np.float32)
    y = np.full((num_samples, max_objects, 5), -1.0, np.float32)
    for i in range(num_samples):
        img = background(rng, yy, xx, max_strokes=4)
        owner = np.full((s, s), -1, np.int32)  # which object each pixel shows
        drawn = []
        for k in range(int(rng.integers(1, max_objects + 1))):
            cls = int(rng.integers(len(SHAPE_CLASSES)))
            r = rng.uniform(min_size, max_size) * s / 2
            cy, cx = rng.uniform(r, s - r, size=2)
            mask = _object_mask(SHAPE_CLASSES[cls], yy, xx, cy, cx, r)
            if not mask.any():
                continue
            colour = rng.uniform(0, 1, size=3).astype(np.float32)
            bg = img[mask].mean(axis=0)
            if np.abs(colour - bg).sum() < 0.6:  # keep it visible against what is behind
                colour = 1.0 - bg
            img[mask] = colour
            owner[mask] = k
            rows, cols = np.nonzero(mask)
            drawn.append((k, cls, int(mask.sum()),
                          [rows.min() / s, cols.min() / s, (rows.max() + 1) / s,
                           (cols.max() + 1) / s]))
        row = 0
        for k, cls, area, box in drawn:
            if (owner == k).sum() >= MIN_VISIBLE * area:
                y[i, row] = [cls, *box]
                row += 1
        x[i] = np.clip(img, 0.0, 1.0)
    return x, y
