"""Mean average precision of detections, as COCO scores it (`pycocotools`): mAP@0.5 and
mAP@0.5:0.95 over the classes that have objects."""

import contextlib
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tfcompress.detection._boxes import Detections

MISSING = ("Detection metrics need pycocotools: pip install 'tfcompress[detection]' "
           "(or pip install pycocotools).")
SIDE = 1000.0  # boxes are scored in a 1000 x 1000 frame (COCO's areas need pixels)


def objects(targets: np.ndarray) -> list[np.ndarray]:
    """The rows `[class, ymin, xmin, ymax, xmax]` of each image of `(batch, B, 5)` targets,
    without the padding (class `-1`)."""
    targets = np.asarray(targets, np.float32)
    return [t[t[:, 0] >= 0] for t in targets]


def mean_average_precision(truth: Sequence[np.ndarray], found: Sequence[Detections],
                           classes: int) -> dict[str, float]:
    """COCO's `map` (mAP@0.5:0.95) and `map50` (mAP@0.5), as fractions, of the detections
    `found` against the objects `truth` (one array of `[class, ymin, xmin, ymax, xmax]` rows
    per image); classes without any object are left out, as COCO does. No object at all
    scores 0."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError(MISSING) from None
    if len(truth) != len(found):
        raise ValueError(f"{len(truth)} images of objects but {len(found)} of detections.")
    images = [{"id": i + 1, "width": SIDE, "height": SIDE} for i in range(len(truth))]
    annotations = []
    for i, rows in enumerate(truth):
        for row in rows:
            ymin, xmin, ymax, xmax = (float(v) * SIDE for v in row[1:5])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(row[0]) + 1, "iscrowd": 0,
                                "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                                "area": (xmax - xmin) * (ymax - ymin)})
    if not annotations:
        return {"map": 0.0, "map50": 0.0}
    results = []
    for i, d in enumerate(found):
        for box, c, s in zip(d.boxes, d.classes, d.scores, strict=True):
            ymin, xmin, ymax, xmax = (float(v) * SIDE for v in box)
            results.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                            "bbox": [xmin, ymin, xmax - xmin, ymax - ymin]})
    if not results:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c + 1} for c in range(classes)]}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": max(float(ev.stats[0]), 0.0), "map50": max(float(ev.stats[1]), 0.0)}


def score_batches(pairs: Iterable[tuple[np.ndarray, Any]], anchors: np.ndarray,
                  postprocess) -> dict[str, float]:
    """mAP over `(targets, outputs)` batches of a detector with `anchors`: raw outputs
    (decoded by `postprocess`) or a list of `Detections` (a post-processed file's)."""
    truth: list[np.ndarray] = []
    found: list[Detections] = []
    classes = 0
    for y, pred in pairs:
        truth += objects(y)
        if isinstance(pred, list) and all(isinstance(d, Detections) for d in pred):
            found += pred  # a file's own post-processing made them
            classes = max([classes] + [int(d.classes.max()) + 1 for d in pred
                                       if len(d.classes)])
            continue
        pred = np.asarray(pred)
        classes = max(classes, pred.shape[-1] - 4)
        found += postprocess.detections(pred, anchors)
    seen = [int(t[:, 0].max()) + 1 for t in truth if len(t)]
    return mean_average_precision(truth, found, max([classes] + seen))
