"""Anchor boxes: where a detector's predictions sit on the image, and the layer that carries
them inside a Keras model so that they travel with it (saved, loaded, compressed, exported).

Anchors are `(A, 4)` float32 rows `[y_center, x_center, height, width]` in the image's
normalized coordinates (0 to 1), the layout `TFLite_Detection_PostProcess` reads. They are
ordered as a head's output is flattened: feature map by feature map, then row, column and
the anchors of one position.
"""

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

# How a detector's training loss matches its anchors to objects (`DetectionLoss`): by overlap
# (anchor boxes, SSD) or by centre (an anchor-free head: one point per cell).
MATCHINGS = ("iou", "centre")


def grid_anchors(feature_sizes: Sequence[Sequence[int]], scales: Sequence[Sequence[float]],
                 aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5)) -> np.ndarray:
    """The anchors of an SSD-style head: at the centre of every cell of every feature map,
    one box per scale (of that map) and aspect ratio (width over height).

    Args:
        feature_sizes: `(height, width)` in cells of each feature map, e.g. `[(6, 6), (3, 3)]`.
        scales: For each feature map, the anchor sizes as a share of the image's side.
        aspect_ratios: Width over height of the anchors of every scale. Defaults to
            `(1.0, 2.0, 0.5)`.

    Returns:
        Float32 `(A, 4)` rows `[y_center, x_center, height, width]`, `A` = the cells of every
        map times its scales times the aspect ratios.

    Raises:
        ValueError: When the maps and the scales do not pair up, or a size is not positive.

    Examples:
        >>> grid_anchors([(2, 2)], [[0.5]], [1.0])[0].tolist()
        [0.25, 0.25, 0.5, 0.5]
        >>> grid_anchors([(6, 6), (3, 3)], [[0.2, 0.3], [0.5, 0.7]]).shape
        (270, 4)
    """
    if len(feature_sizes) != len(scales):
        raise ValueError(f"Give one list of scales per feature map: {len(feature_sizes)} maps, "
                         f"{len(scales)} lists of scales.")
    ratios = [float(r) for r in aspect_ratios]
    if not ratios or min(ratios) <= 0:
        raise ValueError(f"aspect_ratios must be positive numbers, got {aspect_ratios}.")
    rows = []
    for (h, w), level in zip(feature_sizes, scales, strict=True):
        if int(h) < 1 or int(w) < 1 or not level or min(level) <= 0:
            raise ValueError(f"Feature map {(h, w)} with scales {level}: sizes and scales must "
                             "be positive.")
        shapes = np.array([(s / np.sqrt(r), s * np.sqrt(r)) for s in level for r in ratios],
                          np.float32)  # (k, 2): height, width
        cy, cx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        centres = np.stack([cy.ravel(), cx.ravel()], axis=1).astype(np.float32)  # (h*w, 2)
        level_rows = np.concatenate([np.repeat(centres, len(shapes), axis=0),
                                     np.tile(shapes, (len(centres), 1))], axis=1)
        rows.append(level_rows)
    return np.concatenate(rows).astype(np.float32)


@keras.saving.register_keras_serializable(package="tfcompress")
class Anchors(keras.layers.Layer):
    """The last layer of a tfcompress detector: passes the head's output through unchanged
    and carries the anchor boxes it is decoded against (saved in the model's config).

    A detector's output is `(batch, A, 4 + K)`: per anchor, four box offsets `[ty, tx, th,
    tw]` (centre-size encoding with scales 10, 10, 5, 5, as `TFLite_Detection_PostProcess`
    decodes them) and the logits of `K` object classes (sigmoid scores; no background
    column). Give the anchors as an `(A, 4)` array of `[y_center, x_center, height, width]`
    (normalized) or as the arguments of `grid_anchors`.

    An anchor-free head (one point per cell) gives one anchor per cell, whose size is only the
    reference its box offsets are encoded against, and `matching="centre"`: its training loss
    then assigns objects to points by centre and size instead of by overlap.

    Args:
        anchors: `(A, 4)` anchors. Defaults to `None`: made by `grid_anchors`.
        feature_sizes: As for `grid_anchors`. Defaults to `None`.
        scales: As for `grid_anchors`. Defaults to `None`.
        aspect_ratios: As for `grid_anchors`. Defaults to `(1.0, 2.0, 0.5)`.
        matching: How the training loss matches anchors to objects, `"iou"` (anchor boxes)
            or `"centre"` (anchor-free points). Defaults to `"iou"`.
        **kwargs: Keras layer arguments (`name`...).

    Raises:
        ValueError: Without anchors or the means to make them, or anchors not shaped `(A, 4)`.
    """

    def __init__(self, anchors: Any = None, feature_sizes: Any = None, scales: Any = None,
                 aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5), matching: str = "iou",
                 **kwargs: Any):
        super().__init__(**kwargs)
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}.")
        self.matching = matching
        self.feature_sizes = None if feature_sizes is None else [
            [int(v) for v in s] for s in feature_sizes]
        self.scales = None if scales is None else [[float(v) for v in s] for s in scales]
        self.aspect_ratios = [float(r) for r in aspect_ratios]
        self._given = None if anchors is None else np.asarray(anchors, np.float32)
        if self._given is None and (self.feature_sizes is None or self.scales is None):
            raise ValueError("Anchors needs anchors=(A, 4) array, or feature_sizes and scales.")
        boxes = self.boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all(boxes[:, 2:] > 0):
            raise ValueError(f"anchors must be (A, 4) rows [y_center, x_center, height, width] "
                             f"with positive sizes; got shape {boxes.shape}.")

    @property
    def boxes(self) -> np.ndarray:
        """The `(A, 4)` anchors."""
        if self._given is not None:
            return self._given
        return grid_anchors(self.feature_sizes, self.scales, self.aspect_ratios)

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        if self._given is not None:
            config["anchors"] = self._given.tolist()
        else:
            config.update(feature_sizes=self.feature_sizes, scales=self.scales)
        config["aspect_ratios"] = self.aspect_ratios
        if self.matching != "iou":  # anchor boxes keep the config (and run fingerprints) of old
            config["matching"] = self.matching
        return config


def _anchors_layer(model: Any) -> "Anchors | None":
    from tfcompress import _graph

    for layer in _graph.all_layers(model):
        if isinstance(layer, Anchors):
            return layer
    return None


def anchors_of(model: Any) -> np.ndarray | None:
    """The anchors a detector carries (its `Anchors` layer, nested models included), or
    `None` for a model without one."""
    layer = _anchors_layer(model)
    return None if layer is None else layer.boxes


def matching_of(model: Any) -> str:
    """How `model`'s training loss matches its anchors to objects: its `Anchors` layer's
    `matching` (`"iou"` or `"centre"`), `"iou"` for anchors given from outside."""
    layer = _anchors_layer(model)
    return "iou" if layer is None else layer.matching


def check_detector(model: Any, anchors: Any = None, what: str = "The model") -> np.ndarray:
    """The anchors to decode `model`'s output with (`anchors` if given, else its own), after
    checking that the output is `(batch, A, 4 + K)` for those `A` anchors; one line otherwise."""
    boxes = anchors_of(model) if anchors is None else np.asarray(anchors, np.float32)
    outputs = getattr(model, "outputs", None) or []
    shape = tuple(outputs[0].shape) if outputs else ()
    if boxes is None:
        raise ValueError(
            f"{what} has no anchors, so its outputs cannot be decoded into boxes. End it with "
            "a tfcompress.detection.Anchors layer, or pass anchors= (an (A, 4) array; command "
            "line: --anchors anchors.npy).")
    if len(shape) != 3 or shape[1] != len(boxes) or (shape[2] or 0) < 5:
        raise ValueError(
            f"{what} outputs {shape}, but a detector with {len(boxes)} anchors outputs (batch, "
            f"{len(boxes)}, 4 + classes): four box offsets then class logits per anchor.")
    return boxes
