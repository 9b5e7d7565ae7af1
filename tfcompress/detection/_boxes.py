"""Box arithmetic for detectors, in NumPy (decoding, non-maximum suppression, scoring) and in
`keras.ops` (matching anchors to objects inside the training loss, on any backend).

Boxes are `[ymin, xmin, ymax, xmax]` in normalized image coordinates unless named otherwise;
anchors are `[y_center, x_center, height, width]`. Offsets follow the centre-size encoding of
`TFLite_Detection_PostProcess`: `ty = 10 * (y - ya) / ha`, `tx = 10 * (x - xa) / wa`,
`th = 5 * log(h / ha)`, `tw = 5 * log(w / wa)`.
"""

from dataclasses import dataclass

import numpy as np

SCALES = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w: the scales TFLite_Detection_PostProcess uses


def corners(centre_size):
    """`[yc, xc, h, w]` to `[ymin, xmin, ymax, xmax]` (NumPy or `keras.ops` tensors)."""
    yc, xc, h, w = (centre_size[..., i] for i in range(4))
    return _stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], centre_size)


def _stack(values, like):
    if isinstance(like, np.ndarray):
        return np.stack(values, axis=-1)
    from keras import ops

    return ops.stack(values, axis=-1)


def decode(offsets: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Boxes `[ymin, xmin, ymax, xmax]` from offsets `(..., A, 4)` against `(A, 4)` anchors."""
    offsets = np.asarray(offsets, np.float32)
    ya, xa, ha, wa = (anchors[:, i] for i in range(4))
    y = offsets[..., 0] / SCALES[0] * ha + ya
    x = offsets[..., 1] / SCALES[1] * wa + xa
    h = np.exp(np.clip(offsets[..., 2] / SCALES[2], -10, 10)) * ha
    w = np.exp(np.clip(offsets[..., 3] / SCALES[3], -10, 10)) * wa
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `a` (n, 4) with every box of `b` (m, 4)."""
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        overlap = iou_matrix(boxes[best:best + 1], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(keep, np.int64)


@dataclass(frozen=True)
class Detections:
    """One image's detections: `boxes` `(n, 4)` `[ymin, xmin, ymax, xmax]` normalized,
    `classes` `(n,)` int, `scores` `(n,)`, best first."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Postprocess:
    """How raw outputs become detections, as `TFLite_Detection_PostProcess` does it: scores
    over `score_threshold`, per-class non-maximum suppression at `iou_threshold`, the best
    `max_detections` kept (`per_class` of each class before that)."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100
    per_class: int = 100

    def __post_init__(self):
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}.")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}.")
        if self.max_detections < 1 or self.per_class < 1:
            raise ValueError("max_detections and per_class must be at least 1.")

    def detections(self, outputs: np.ndarray, anchors: np.ndarray) -> list[Detections]:
        """The detections of every image of a batch of raw outputs `(batch, A, 4 + K)`."""
        outputs = np.asarray(outputs, np.float32)
        boxes = np.clip(decode(outputs[..., :4], anchors), 0.0, 1.0)
        scores = 1.0 / (1.0 + np.exp(-np.clip(outputs[..., 4:], -30, 30)))
        return [self._one(b, s) for b, s in zip(boxes, scores, strict=True)]

    def _one(self, boxes: np.ndarray, scores: np.ndarray) -> Detections:
        found_b, found_c, found_s = [], [], []
        for c in range(scores.shape[1]):
            idx = np.flatnonzero(scores[:, c] > self.score_threshold)
            if not idx.size:
                continue
            kept = idx[nms(boxes[idx], scores[idx, c], self.iou_threshold, self.per_class)]
            found_b.append(boxes[kept])
            found_c.append(np.full(len(kept), c, np.int64))
            found_s.append(scores[kept, c])
        if not found_b:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                              np.zeros(0, np.float32))
        b, c, s = (np.concatenate(v) for v in (found_b, found_c, found_s))
        top = np.argsort(-s, kind="stable")[:self.max_detections]
        return Detections(b[top], c[top], s[top])


def same_detections(a: Detections, b: Detections, iou: float = 0.5) -> bool:
    """True when two detection lists name the same objects: as many detections, and each of
    `a`'s (best first) paired with a distinct one of `b` of its class overlapping it by at
    least `iou`."""
    if len(a.scores) != len(b.scores):
        return False
    free = np.ones(len(b.scores), bool)
    for box, cls in zip(a.boxes, a.classes, strict=True):
        cand = np.flatnonzero(free & (b.classes == cls))
        if not cand.size:
            return False
        overlap = iou_matrix(box[None], b.boxes[cand])[0]
        best = int(np.argmax(overlap))
        if overlap[best] < iou:
            return False
        free[cand[best]] = False
    return True


AGREEMENT = Postprocess(score_threshold=0.3, max_detections=20)  # the confident detections


def detection_agreement(a: np.ndarray, b: np.ndarray, anchors: np.ndarray,
                        postprocess: Postprocess = AGREEMENT) -> float:
    """The share of images on which two detectors' raw outputs `(batch, A, 4 + K)` give the
    same confident detections (`same_detections`)."""
    da, db = postprocess.detections(a, anchors), postprocess.detections(b, anchors)
    return float(np.mean([same_detections(p, q) for p, q in zip(da, db, strict=True)]))
