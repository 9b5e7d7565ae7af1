"""Anchors, box decoding, non-maximum suppression, COCO mAP and the detection loss."""

import json

import keras
import numpy as np
import pytest

from tests.pruning.test_backends import BACKENDS, _run
from tfcompress.detection import (
    Anchors,
    DetectionLoss,
    Detections,
    Postprocess,
    anchors_of,
    check_detector,
    decode,
    grid_anchors,
    matching_of,
    mean_average_precision,
)
from tfcompress.detection._boxes import SCALES, corners
from tfcompress.reference import compile_for_detection, reference_detector


def _encode(boxes, anchors):
    """The offsets that decode to `boxes` (corners) against `anchors`: the inverse of
    `decode`, written out here from the encoding's definition."""
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    yc, xc = boxes[:, 0] + h / 2, boxes[:, 1] + w / 2
    return np.stack([SCALES[0] * (yc - anchors[:, 0]) / anchors[:, 2],
                     SCALES[1] * (xc - anchors[:, 1]) / anchors[:, 3],
                     SCALES[2] * np.log(h / anchors[:, 2]),
                     SCALES[3] * np.log(w / anchors[:, 3])], axis=1)


def test_grid_anchors_follow_the_heads_flattening_order():
    a = grid_anchors([(2, 3)], [[0.2, 0.4]], [1.0, 4.0])
    assert a.shape == (2 * 3 * 4, 4)
    # position (row 0, col 1) holds anchors 4..7: its centre, then scale x ratio
    np.testing.assert_allclose(a[4:8, :2], [[0.25, 0.5]] * 4)
    np.testing.assert_allclose(a[4:8, 2:], [[0.2, 0.2], [0.1, 0.4], [0.4, 0.4], [0.2, 0.8]])
    with pytest.raises(ValueError, match="one list of scales per feature map"):
        grid_anchors([(2, 2), (1, 1)], [[0.5]])


def test_decode_inverts_the_encoding_and_offsets_of_zero_are_the_anchors():
    anchors = grid_anchors([(4, 4)], [[0.3]], [1.0, 2.0])
    rng = np.random.default_rng(0)
    centre = rng.uniform(0.2, 0.8, (len(anchors), 2))
    size = rng.uniform(0.05, 0.3, (len(anchors), 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    np.testing.assert_allclose(decode(_encode(boxes, anchors), anchors), boxes, atol=1e-5)
    np.testing.assert_allclose(decode(np.zeros_like(anchors), anchors), corners(anchors),
                               atol=1e-6)


def test_the_anchors_layer_travels_with_the_model(tmp_path):
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(3 * 7, 3, padding="same")(inputs)
    h = keras.layers.Reshape((-1, 7))(h)
    out = Anchors(feature_sizes=[(8, 8)], scales=[[0.25]], aspect_ratios=(1.0, 2.0, 0.5))(h)
    model = keras.Model(inputs, out)
    model.save(tmp_path / "det.keras")
    loaded = keras.saving.load_model(tmp_path / "det.keras")
    np.testing.assert_array_equal(anchors_of(loaded), anchors_of(model))
    assert check_detector(loaded).shape == (192, 4)
    given = Anchors(anchors=anchors_of(model)[:5])
    assert given.get_config()["anchors"] == anchors_of(model)[:5].tolist()
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="has no anchors.*--anchors anchors.npy"):
        check_detector(plain)
    with pytest.raises(ValueError, match=r"outputs \(None, 3\), but a detector with 5 anchors"):
        check_detector(plain, anchors_of(model)[:5])


def _truth():
    return [np.array([[0, 0.1, 0.1, 0.5, 0.5], [2, 0.5, 0.5, 0.9, 0.8]], np.float32),
            np.array([[1, 0.2, 0.3, 0.6, 0.7]], np.float32)]


def _found(rows, shift=0.0):
    boxes = np.array([r[1:] for r in rows], np.float32)
    boxes[:, [1, 3]] += shift
    return Detections(boxes, np.array([int(r[0]) for r in rows]), np.full(len(rows), 0.9))


def test_map_is_coco_s_perfect_score_and_counts_iou_thresholds():
    truth = _truth()
    perfect = mean_average_precision(truth, [_found(t) for t in truth], classes=3)
    assert perfect == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0)}
    # the first box moved sideways by a quarter of its width: IoU (w - s) / (w + s) = 0.6,
    # a hit at COCO's thresholds 0.50 and 0.55 (and 0.60 within rounding) of the ten
    one = truth[0][:1]
    score = mean_average_precision([one], [_found(one, shift=0.4 / 4)], classes=3)
    assert score["map50"] == pytest.approx(1.0)
    assert 0.2 - 1e-6 <= score["map"] <= 0.3 + 1e-6
    wrong = [Detections(d.boxes, (d.classes + 1) % 3, d.scores) for d in
             (_found(t) for t in truth)]
    assert mean_average_precision(truth, wrong, classes=3)["map50"] == 0.0


def test_postprocess_keeps_the_best_box_of_overlapping_ones_per_class():
    anchors = grid_anchors([(2, 2)], [[0.5]], [1.0])
    out = np.full((1, 4, 4 + 2), -10.0, np.float32)
    out[0, :, :4] = 0.0
    out[0, 0, 4] = 3.0   # anchor 0, class 0
    out[0, 0, 5] = 1.0   # anchor 0, class 1: another class, kept too
    out[0, 1, 4] = 2.0   # anchor 1, class 0, its box moved onto anchor 0's: suppressed
    out[0, 1, 1] = 10.0 * (0.25 - 0.75) / 0.5
    out[0, 2, 4] = 1.5   # anchor 2, class 0, apart from the others: kept
    found = Postprocess(score_threshold=0.1, iou_threshold=0.5).detections(out, anchors)[0]
    assert found.classes.tolist() == [0, 0, 1]
    np.testing.assert_allclose(found.boxes[:2], corners(anchors[[0, 2]]), atol=1e-6)
    assert found.scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    with pytest.raises(ValueError, match="iou_threshold"):
        Postprocess(iou_threshold=0.0)


def test_the_loss_is_lowest_for_outputs_that_encode_the_objects():
    anchors = grid_anchors([(4, 4)], [[0.25, 0.5]], [1.0])
    y = np.full((2, 3, 5), -1.0, np.float32)
    y[0, :2] = [[1, 0.0, 0.0, 0.25, 0.25], [0, 0.5, 0.5, 1.0, 1.0]]
    y[1, :1] = [[2, 0.25, 0.5, 0.5, 0.75]]
    loss = DetectionLoss(anchors)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(2, len(anchors), 4 + 3)).astype(np.float32)
    perfect = np.full_like(noise, -8.0)
    for i in range(2):
        for c, *box in y[i][y[i, :, 0] >= 0]:
            iou = [_iou(box, a) for a in corners(anchors)]
            best = int(np.argmax(iou))
            perfect[i, best, :4] = _encode(np.array([box]), anchors[best:best + 1])[0]
            perfect[i, best, 4 + int(c)] = 8.0
    assert float(loss(y, perfect)) < 0.1 * float(loss(y, noise))
    copy = DetectionLoss.from_config(loss.get_config())
    assert float(copy(y, noise)) == pytest.approx(float(loss(y, noise)))


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


_TRAIN = """
import json
import numpy as np
import keras
import tfcompress as tfc
from tfcompress.reference import compile_for_detection, reference_detector
from tfcompress import _training

keras.utils.set_random_seed(0)
ds = tfc.data.load("shapes-detect", num_samples=SAMPLES, image_size=SIZE)
model = compile_for_detection(reference_detector((SIZE, SIZE, 3), alpha=0.5, head="HEAD"),
                              3e-3)
before = _training.evaluate(model, ds.test)
history = model.fit(ds.x_train, ds.y_train, epochs=EPOCHS, batch_size=32, verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "losses": history.history["loss"],
                  "before": before, "after": _training.evaluate(model, ds.test)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", ["ssd", "anchor_free"])
def test_the_reference_detector_learns_shapes_detect_on_every_backend(backend, head):
    # JAX's CPU convolutions are slow: a shorter run there (and for the second head on
    # TensorFlow) shows the same loss learns
    full = backend == "tensorflow" and head == "ssd"
    code = (_TRAIN.replace("SAMPLES", "800" if full else "400")
            .replace("SIZE", "96" if full else "64").replace("EPOCHS", "10" if full else "9")
            .replace("HEAD", head))
    r = json.loads(_run(code, backend))
    assert r["backend"] == backend
    # the centre-matched loss falls more slowly in 9 epochs (measured 0.48 of its start on
    # TensorFlow, 0.52 on JAX); the anchor-box loss falls below half of it
    assert r["losses"][-1] < (0.5 if head == "ssd" else 0.6) * r["losses"][0]
    assert r["before"] < 0.02 and r["after"] > r["before"]  # mAP@0.5, scored by pycocotools
    if full:
        assert r["after"] > 0.05


def test_centre_matching_puts_each_object_on_points_inside_it_at_its_own_scale(tmp_path):
    model = reference_detector((64, 64, 3), 3, alpha=0.25, head="anchor_free")
    model.save(tmp_path / "anchor_free.keras")
    loaded = keras.saving.load_model(tmp_path / "anchor_free.keras")
    assert matching_of(loaded) == "centre" and matching_of(reference_detector()) == "iou"
    assert compile_for_detection(loaded).loss.matching == "centre"
    anchors = anchors_of(loaded)  # one 2-cell prior per cell of the 8x8, 4x4 and 2x2 maps
    level = np.repeat([0, 1, 2], [64, 16, 4])
    np.testing.assert_allclose(anchors[:, 2], np.array([0.25, 0.5, 1.0])[level])
    y = np.full((1, 6, 5), -1.0, np.float32)  # the last row pads
    y[0, :5] = [[0, 0.05, 0.05, 0.25, 0.25],   # small: the 8x8 map (prior 0.25)
                [1, 0.1, 0.1, 0.9, 0.9],       # large: the 2x2 map (prior 1.0)
                [2, 0.60, 0.10, 0.63, 0.13],   # tiny, no cell centre inside it
                [0, 0.55, 0.55, 0.85, 0.85],   # over the large one, on the 8x8 map
                [1, 0.60, 0.60, 0.80, 0.80]]   # inside the last, smaller: wins shared points
    loss = DetectionLoss(anchors, matching="centre")
    assert DetectionLoss.from_config(loss.get_config()).matching == "centre"
    assert "matching" not in DetectionLoss(anchors).get_config()  # anchor boxes: as before
    pick, positive, counted = (keras.ops.convert_to_numpy(t)[0] for t in loss.assign(y))
    owner = pick.argmax(-1)
    assert counted.all()  # no ignored zone: every other point is background
    for obj, map_ in ((0, 0), (1, 2), (2, 0), (3, 0), (4, 0)):
        mine = (positive > 0) & (owner == obj)
        assert mine.any() and set(level[mine]) == {map_}, (obj, level[mine])
        top, left, bottom, right = y[0, obj, 1:]
        if obj != 2:  # the tiny one keeps the point nearest its centre, outside it
            assert np.all((anchors[mine, 0] > top) & (anchors[mine, 0] < bottom)
                          & (anchors[mine, 1] > left) & (anchors[mine, 1] < right))
    assert not np.any((positive > 0) & (owner == 5))  # padding is nobody's object
    shared = (np.abs(anchors[:, :2] - 0.7).max(1) <= 0.75 * anchors[:, 2]) & (level == 0) & \
        np.all((anchors[:, :2] > 0.6) & (anchors[:, :2] < 0.8), axis=1)
    assert shared.any() and np.all(owner[shared] == 4) and np.all(positive[shared] > 0)
    with pytest.raises(ValueError, match="matching must be one of"):
        DetectionLoss(anchors, matching="nearest")
    with pytest.raises(ValueError, match="head must be 'ssd' or 'anchor_free'"):
        reference_detector(head="yolo")
