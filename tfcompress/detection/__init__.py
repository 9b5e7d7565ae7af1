"""Object detection: anchors carried by the model, the training loss, decoding with
non-maximum suppression, and COCO mAP.

A tfcompress detector is a Keras model whose output is `(batch, A, 4 + K)` (per anchor: box
offsets `[ty, tx, th, tw]` in the centre-size encoding of `TFLite_Detection_PostProcess`,
then `K` class logits scored by a sigmoid) and whose last layer is `Anchors`, which carries
the `A` anchor boxes. Its targets are `(batch, B, 5)` rows `[class, ymin, xmin, ymax, xmax]`
(normalized; class `-1` pads). `tfcompress.reference.reference_detector` builds one.
"""

# Keras first: its first import registers tfcompress's Keras classes (tfcompress/__init__.py),
# which import this package's modules; they must not find it half made.
import keras  # noqa: F401

from tfcompress.detection._anchors import (
    Anchors,
    anchors_of,
    check_detector,
    grid_anchors,
    matching_of,
)
from tfcompress.detection._boxes import (
    Detections,
    Postprocess,
    decode,
    detection_agreement,
    iou_matrix,
    nms,
    same_detections,
)
from tfcompress.detection._loss import DetectionLoss, detection_distillation
from tfcompress.detection._map import mean_average_precision, objects
from tfcompress.detection._postprocess import file_detections, has_postprocess

__all__ = ["Anchors", "DetectionLoss", "Detections", "Postprocess", "anchors_of",
           "check_detector", "decode", "detection_agreement", "detection_distillation",
           "file_detections", "grid_anchors", "has_postprocess", "iou_matrix",
           "matching_of", "mean_average_precision", "nms", "objects", "same_detections"]
