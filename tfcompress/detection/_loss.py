"""The training loss of a detector, written with `keras.ops` (any backend): each anchor is
matched to an object (the one it overlaps most, or for an anchor-free head the smallest one
whose centre region holds it), class scores learn by focal loss (Lin et al., 2017: no
hard-negative mining needed) and matched anchors learn their box offsets by a Huber loss."""

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.detection._anchors import MATCHINGS
from tfcompress.detection._boxes import SCALES, corners

# An anchor-free point is positive for an object whose centre lies within this share of the
# point's prior size (both axes; 0.75 of a 2-cell prior is 1.5 cells, as in centre sampling).
CENTRE_RADIUS = 0.75


def _iou(anchors, boxes):
    """IoU of `(A, 4)` anchor corners with `(N, B, 4)` boxes: `(N, A, B)`."""
    a = anchors[None, :, None, :]
    b = boxes[:, None, :, :]
    top = ops.maximum(a[..., 0], b[..., 0])
    left = ops.maximum(a[..., 1], b[..., 1])
    bottom = ops.minimum(a[..., 2], b[..., 2])
    right = ops.minimum(a[..., 3], b[..., 3])
    inter = ops.relu(bottom - top) * ops.relu(right - left)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / ops.maximum(area_a + area_b - inter, 1e-9)


@keras.saving.register_keras_serializable(package="tfcompress")
class DetectionLoss(keras.losses.Loss):
    """Focal loss on class scores plus Huber loss on box offsets, for outputs `(batch, A,
    4 + K)` against targets `(batch, B, 5)`: rows `[class, ymin, xmin, ymax, xmax]`
    (normalized; class `-1` pads an image's rows).

    With `matching="iou"` (anchor boxes, SSD) an anchor is matched to the object it overlaps
    most: positive from `iou_threshold`, background below `ignore_threshold`, left out in
    between; every object also takes the anchor that overlaps it most.

    With `matching="centre"` (an anchor-free head: one point per cell, its prior only a
    reference size) an object is assigned to the feature map whose prior size is nearest its
    own (geometric mean of its sides), and every point of that map that lies inside the
    object and within `CENTRE_RADIUS` priors of its centre is positive for it (the smallest
    such object when several qualify); an object too small to hold any point takes the point
    of its map nearest its centre, and every other point is background.

    The sum is divided by the number of positive anchors.

    Args:
        anchors: The detector's `(A, 4)` anchors (`tfcompress.detection.anchors_of(model)`).
        iou_threshold: IoU from which an anchor is positive. Defaults to `0.5`.
        ignore_threshold: IoU below which an anchor is background. Defaults to `0.4`.
        alpha: Focal loss weight of positives. Defaults to `0.25`.
        gamma: Focal loss focusing exponent. Defaults to `2.0`.
        box_weight: Weight of the box loss. Defaults to `1.0`.
        matching: `"iou"` or `"centre"`, as above; a detector's own is
            `tfcompress.detection.matching_of(model)`. Defaults to `"iou"`.
        **kwargs: `keras.losses.Loss` arguments (`name`...).
    """

    def __init__(self, anchors: Any, iou_threshold: float = 0.5, ignore_threshold: float = 0.4,
                 alpha: float = 0.25, gamma: float = 2.0, box_weight: float = 1.0,
                 matching: str = "iou", **kwargs: Any):
        kwargs.setdefault("name", "detection_loss")
        super().__init__(**kwargs)
        self.anchors = np.asarray(anchors, np.float32)
        if self.anchors.ndim != 2 or self.anchors.shape[1] != 4:
            raise ValueError(f"anchors must be (A, 4), got shape {self.anchors.shape}.")
        if not 0.0 < ignore_threshold <= iou_threshold <= 1.0:
            raise ValueError("Need 0 < ignore_threshold <= iou_threshold <= 1, got "
                             f"{ignore_threshold} and {iou_threshold}.")
        self.iou_threshold, self.ignore_threshold = float(iou_threshold), float(ignore_threshold)
        self.alpha, self.gamma, self.box_weight = float(alpha), float(gamma), float(box_weight)
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}.")
        self.matching = matching

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        anchors = ops.convert_to_tensor(self.anchors)
        classes = ops.shape(y_pred)[-1] - 4
        label, gt = y_true[..., 0], y_true[..., 1:5]
        pick, positive, counted = self.assign(y_true)
        box = ops.matmul(pick, gt)  # (N, A, 4) corners of each anchor's object
        cls = ops.sum(pick * ops.maximum(label, 0.0)[:, None, :], axis=2)

        target = ops.one_hot(ops.cast(cls, "int32"), classes) * positive[..., None]
        logits = y_pred[..., 4:]
        p = ops.sigmoid(logits)
        ce = _bce(logits, target)
        p_t = p * target + (1.0 - p) * (1.0 - target)
        alpha_t = self.alpha * target + (1.0 - self.alpha) * (1.0 - target)
        focal = alpha_t * ops.power(1.0 - p_t, self.gamma) * ce
        cls_loss = ops.sum(ops.sum(focal, axis=-1) * counted, axis=-1)

        h = ops.maximum(box[..., 2] - box[..., 0], 1e-6)
        w = ops.maximum(box[..., 3] - box[..., 1], 1e-6)
        yc, xc = box[..., 0] + h / 2, box[..., 1] + w / 2
        enc = ops.stack([SCALES[0] * (yc - anchors[:, 0]) / anchors[:, 2],
                         SCALES[1] * (xc - anchors[:, 1]) / anchors[:, 3],
                         SCALES[2] * ops.log(h / anchors[:, 2]),
                         SCALES[3] * ops.log(w / anchors[:, 3])], axis=-1)
        box_loss = ops.sum(_huber(y_pred[..., :4], enc) * positive, axis=-1)

        batch = ops.cast(ops.shape(y_pred)[0], "float32")
        positives = ops.maximum(ops.sum(positive), 1.0)
        return (cls_loss + self.box_weight * box_loss) * batch / positives

    def assign(self, y_true):
        """`(pick, positive, counted)` for targets `(N, B, 5)`: `pick` `(N, A, B)` one-hot, the
        object each anchor is matched to; `positive` `(N, A)` 1 where an anchor learns its
        object; `counted` `(N, A)` 1 where its class scores count in the loss."""
        y_true = ops.cast(y_true, "float32")
        anchors = ops.convert_to_tensor(self.anchors)
        count = self.anchors.shape[0]
        label, gt = y_true[..., 0], y_true[..., 1:5]
        valid = ops.cast(label >= 0, "float32")  # (N, B)
        if self.matching == "iou":
            score = _iou(corners(anchors), gt) * valid[:, None, :] - (1.0 - valid[:, None, :])
            # every object keeps the anchor that overlaps it most
            forced = ops.transpose(ops.one_hot(ops.argmax(score, axis=1), count), (0, 2, 1))
            forced = forced * valid[:, None, :]
        else:
            score, near = _centre_scores(anchors, gt, valid)
            # an object on no point of its map keeps the one nearest its centre
            alone = valid * ops.cast(ops.max(score, axis=1) <= 0.0, "float32")  # (N, B)
            forced = ops.transpose(ops.one_hot(ops.argmax(near, axis=1), count), (0, 2, 1))
            forced = forced * alone[:, None, :]
        score = ops.where(forced > 0, 3.0, score)
        pick = ops.one_hot(ops.argmax(score, axis=2), ops.shape(gt)[1])  # (N, A, B)
        best = ops.max(score, axis=2)
        if self.matching == "iou":
            positive = ops.cast(best >= self.iou_threshold, "float32")
            counted = ops.maximum(positive, ops.cast(best < self.ignore_threshold, "float32"))
        else:
            positive = ops.cast(best > 0.0, "float32")
            counted = ops.ones_like(positive)
        return pick, positive, counted

    def get_config(self) -> dict:
        config = {**super().get_config(), "anchors": self.anchors.tolist(),
                  "iou_threshold": self.iou_threshold, "ignore_threshold": self.ignore_threshold,
                  "alpha": self.alpha, "gamma": self.gamma, "box_weight": self.box_weight}
        if self.matching != "iou":  # as Anchors: anchor boxes keep their config of old
            config["matching"] = self.matching
        return config


def _centre_scores(anchors, gt, valid):
    """`(score, near)`, both `(N, A, B)`, for centre matching of `(A, 4)` points (prior sizes
    included) to `(N, B, 4)` object corners: `score` is above 0 where a point may take an
    object, higher for smaller objects (1 to 2), and -1 elsewhere; `near` is highest at the
    point of the object's feature map nearest its centre (for the object's forced point)."""
    ay, ax = anchors[None, :, None, 0], anchors[None, :, None, 1]
    prior = ops.sqrt(anchors[:, 2] * anchors[:, 3])[None, :, None]
    top, left, bottom, right = (gt[:, None, :, i] for i in range(4))
    h, w = ops.maximum(bottom - top, 1e-6), ops.maximum(right - left, 1e-6)
    size = ops.sqrt(h * w)
    scale_gap = ops.abs(ops.log(size / prior))  # (N, A, B)
    level = ops.cast(scale_gap <= ops.min(scale_gap, axis=1, keepdims=True) + 1e-3, "float32")
    dy, dx = ay - (top + bottom) / 2, ax - (left + right) / 2
    near_centre = ops.cast(ops.maximum(ops.abs(dy), ops.abs(dx)) <= CENTRE_RADIUS * prior,
                           "float32")
    inside = ops.cast((ay > top) & (ay < bottom) & (ax > left) & (ax < right), "float32")
    ok = level * near_centre * inside * valid[:, None, :]
    score = ok * (2.0 - h * w) - (1.0 - ok)
    near = level * valid[:, None, :] * (2.0 - dy * dy - dx * dx) - 1.0
    return score, near


def _huber(a, b):
    """The Huber loss (delta 1) between two `(..., 4)` box offsets, summed over the four."""
    diff = ops.abs(a - b)
    return ops.sum(ops.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5), axis=-1)


def _bce(logits, p):
    """Binary cross-entropy of probabilities `p` against `logits`, element by element."""
    return ops.relu(logits) - logits * p + ops.log1p(ops.exp(-ops.abs(logits)))


def detection_distillation(teacher_outputs, student_outputs, temperature: float = 1.0):
    """How far a student detector's outputs are from its teacher's, both `(batch, A, 4 + K)`
    raw outputs on the same anchors: the Bernoulli KL divergence of the student's class
    scores from the teacher's (softened by `temperature`, scaled by its square) plus a Huber
    loss between their box offsets, each anchor weighted by the teacher's confidence in it
    (its highest class score), divided by the sum of those confidences (about the number of
    objects the teacher sees)."""
    t = ops.stop_gradient(ops.cast(teacher_outputs, "float32"))
    s = ops.cast(student_outputs, "float32")
    t_logits, s_logits = t[..., 4:] / temperature, s[..., 4:] / temperature
    p_t = ops.sigmoid(t_logits)
    kl = _bce(s_logits, p_t) - _bce(t_logits, p_t)
    confidence = ops.max(ops.sigmoid(t[..., 4:]), axis=-1)  # (N, A)
    norm = ops.maximum(ops.sum(confidence), 1.0)
    cls = ops.sum(kl) * temperature ** 2 / norm
    box = ops.sum(_huber(s[..., :4], t[..., :4]) * confidence) / norm
    return cls + box
