"""Post-processing inside the `.tflite` file: the `TFLite_Detection_PostProcess` op (decoding
against the anchors, per-class non-maximum suppression) that LiteRT and TFLite Micro run, put
after a detector by the converter from a composite function that names it, and read back as
detections."""

from typing import Any

import numpy as np

from tfcompress.detection._boxes import SCALES, Detections, Postprocess

OP = "TFLite_Detection_PostProcess"
OUTPUTS = ("boxes", "classes", "scores", "count")  # the op's four outputs, in its order


def implements(post: Postprocess, num_classes: int) -> str:
    """The `experimental_implements` signature that makes the converter put the op, with the
    settings of `post`, after a detector of `num_classes` classes."""
    attrs = [("max_detections", "i", post.max_detections),
             ("max_classes_per_detection", "i", 1),
             ("detections_per_class", "i", post.per_class),
             ("use_regular_nms", "b", "true"),  # per class, as Postprocess and COCO do
             ("nms_score_threshold", "f", f"{post.score_threshold:f}"),
             ("nms_iou_threshold", "f", f"{post.iou_threshold:f}"),
             ("y_scale", "f", f"{SCALES[0]:f}"), ("x_scale", "f", f"{SCALES[1]:f}"),
             ("h_scale", "f", f"{SCALES[2]:f}"), ("w_scale", "f", f"{SCALES[3]:f}"),
             ("num_classes", "i", int(num_classes))]
    return " ".join([f'name: "{OP}"'] + [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}'
                                         for k, t, v in attrs])


def serving_function(model: Any, anchors: np.ndarray, post: Postprocess, input_shape: tuple):
    """A batch-1 `tf.function` of images: the detector's raw outputs, sigmoid scores, then
    the op (the converter replaces the composite function's body by it)."""
    import tensorflow as tf

    classes = int(model.outputs[0].shape[-1]) - 4
    n = post.max_detections

    @tf.function(experimental_implements=implements(post, classes))
    def detection_postprocess(boxes, scores, anchor_boxes):
        # only the signature matters: the converter puts the op in place of this body
        return (tf.zeros((1, n, 4), tf.float32), tf.zeros((1, n), tf.float32),
                tf.zeros((1, n), tf.float32), tf.zeros((1,), tf.float32))

    constant = tf.constant(np.asarray(anchors, np.float32))

    def serve(image):
        raw = model(image, training=False)
        return list(detection_postprocess(raw[..., :4], tf.sigmoid(raw[..., 4:]), constant))

    return serve, tf.TensorSpec((1, *input_shape), tf.float32)


def has_postprocess(interp: Any) -> bool:
    """True for an interpreter whose file ends in the op (four outputs: boxes, classes,
    scores, count)."""
    details = interp.get_output_details()
    if len(details) != 4:
        return False
    dims = sorted(len(d["shape"]) for d in details)
    return dims == [1, 2, 2, 3]


def _ordered(interp: Any) -> list[dict]:
    """The op's outputs as `OUTPUTS` names them: by the output index each tensor's name ends
    with (`...:0` boxes, `:1` classes, `:2` scores, `:3` count), else by shape."""
    details = interp.get_output_details()
    try:
        return sorted(details, key=lambda d: int(str(d["name"]).rsplit(":", 1)[1]))
    except (IndexError, ValueError):
        pass
    boxes = next(d for d in details if len(d["shape"]) == 3)
    count = next(d for d in details if len(d["shape"]) == 1)
    rest = [d for d in details if len(d["shape"]) == 2]
    return [boxes, *rest, count]


def file_detections(interp: Any, x: np.ndarray) -> list[Detections]:
    """The detections a post-processed file makes of every image of `x` (one at a time)."""
    from tfcompress import _tflite

    inp = interp.get_input_details()[0]
    boxes_d, classes_d, scores_d, count_d = _ordered(interp)
    found = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], _tflite.quantize_input(x[i:i + 1], inp))
        _tflite.invoke(interp)
        n = int(np.asarray(interp.get_tensor(count_d["index"])).reshape(-1)[0])
        boxes = np.asarray(interp.get_tensor(boxes_d["index"]), np.float32)[0, :n]
        classes = np.asarray(interp.get_tensor(classes_d["index"]))[0, :n].astype(np.int64)
        scores = np.asarray(interp.get_tensor(scores_d["index"]), np.float32)[0, :n]
        found.append(Detections(np.clip(boxes, 0.0, 1.0), classes, scores))
    return found
