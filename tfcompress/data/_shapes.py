"""A procedural, seeded, colour object-recognition set: shapes on cluttered backgrounds.

Everything here is NumPy; nothing is downloaded. Each image holds one object of a known class,
drawn at a random position, scale and colour over a background of a random colour gradient,
noise and distractor strokes, so the classifier has to recognise the outline, not a colour.
"""

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "diamond")


def _object_mask(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float):
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    if kind == "triangle":
        # Apex up: inside when below the two slanted edges and above the base.
        return (dy <= 0.8 * r) & (dy >= -r + 2.0 * np.abs(dx))
    if kind == "cross":
        arm = 0.3 * r
        return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    if kind == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    raise ValueError(f"Unknown shape class {kind!r}; expected one of {SHAPE_CLASSES}.")


def background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray,
               max_strokes: int) -> np.ndarray:
    """A cluttered background on the `(yy, xx)` pixel grid: a linear gradient between two
    random colours, noise, and 1 to `max_strokes` thin random strokes."""
    s = yy.shape[0]
    c0, c1 = rng.uniform(0.0, 1.0, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy) / s
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    img += rng.normal(0.0, 0.06, size=img.shape).astype(np.float32)
    for _ in range(rng.integers(1, max_strokes + 1)):
        y0, x0, y1, x1 = rng.uniform(0, s, size=4)
        num = int(2 * s)
        ly = np.clip(np.linspace(y0, y1, num).astype(int), 0, s - 1)
        lx = np.clip(np.linspace(x0, x1, num).astype(int), 0, s - 1)
        img[ly, lx] = rng.uniform(0, 1, size=3)
    return img


def make_shapes(
    num_samples: int = 6000,
    image_size: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generates the `shapes` set.

    Args:
        num_samples: Number of images, spread evenly over the classes. Defaults to `6000`.
        image_size: Height and width in pixels (at least 16). Defaults to `32`.
        seed: Seed of the generator; the same seed gives the same images. Defaults to `0`.

    Returns:
        `(x, y)`: float32 images in `[0, 1]` of shape `(num_samples, image_size, image_size, 3)`
        and int32 labels indexing `SHAPE_CLASSES`.

    Raises:
        ValueError: If `num_samples` is not positive or `image_size` is below 16.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}.")
    rng = np.random.default_rng(seed)
    n_cls = len(SHAPE_CLASSES)
    y = np.arange(num_samples, dtype=np.int32) % n_cls
    rng.shuffle(y)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    x = np.empty((num_samples, s, s, 3), dtype=np.float32)
    for i in range(num_samples):
        img = background(rng, yy, xx, max_strokes=3)
        # The object: random scale and position, kept inside the frame.
        r = rng.uniform(0.18, 0.34) * s
        cy, cx = rng.uniform(r, s - r, size=2)
        mask = _object_mask(SHAPE_CLASSES[y[i]], yy, xx, cy, cx, r)
        colour = rng.uniform(0, 1, size=3).astype(np.float32)
        # Keep the object visible against the local background.
        bg_mean = img[mask].mean(axis=0) if mask.any() else img.mean(axis=(0, 1))
        if np.abs(colour - bg_mean).sum() < 0.6:
            colour = 1.0 - bg_mean
        img[mask] = colour
        x[i] = np.clip(img, 0.0, 1.0)
    return x, y
