"""A detector through export and bench: post-processing in the file on LiteRT, its reference
kernels and TFLite Micro, the same detections on TFLM as on the reference kernels, and
`bench --metric map50` on a YOLO folder equal to pycocotools' own figure."""

import contextlib
import io
import json
import shutil
import subprocess

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import tfcompress as tfc
from tests.detection.test_data import write_yolo
from tfcompress import _tflite
from tfcompress.cli import main
from tfcompress.detection import Postprocess, file_detections, same_detections
from tfcompress.export import to_tflite
from tfcompress.reference import compile_for_detection, reference_detector


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The reference detector at half width, trained briefly on shapes-detect (about 15 %
    mAP@0.5: enough to detect, so that detections can be compared)."""
    keras.utils.set_random_seed(0)
    ds = tfc.data.load("shapes-detect", num_samples=1000)
    model = compile_for_detection(reference_detector(alpha=0.5), 3e-3)
    model.fit(ds.x_train, ds.y_train, epochs=16, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("det") / "det.keras"
    model.save(path)
    return model, ds, path


@pytest.mark.slow
def test_the_file_ends_in_the_postprocess_op_and_runs_on_every_cpu_runtime(detector, tmp_path):
    model, ds, _ = detector
    found = {}
    for target in ("litert", "litert-reference", "tflm"):
        report = to_tflite(model, tmp_path / f"{target}.tflite", "int8", ds, target=target,
                           detection_postprocess=Postprocess(score_threshold=0.1))
        assert report.op_counts["TFLite_Detection_PostProcess"] == 1
        assert report.integer_only  # every op before it computes in int8
        assert sorted(len(o.shape) for o in report.outputs) == [1, 2, 2, 3]
        assert report.agreement_kind == "detections" and report.agreement >= 0.5
        interp = _tflite.interpreter((tmp_path / f"{target}.tflite").read_bytes(),
                                     target=target)
        found[target] = file_detections(interp, ds.x_test[:100])
    assert "AddDetectionPostprocess" in (tmp_path / "tflm_ops.h").read_text()
    header = (tmp_path / "tflm.h").read_text()  # which output holds what, for the C++ code
    for name in ("BoxesOutput", "ClassesOutput", "ScoresOutput", "CountOutput"):
        assert f"kTflm{name} = " in header
    assert "kTflmMaxDetections = 100;" in header
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is not None:  # the header and the array compile as C++ with every warning
        done = subprocess.run([compiler, "-std=c++17", "-Wall", "-Werror", "-c",
                               str(tmp_path / "tflm.cc"), "-o", str(tmp_path / "tflm.o")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    # TFLite Micro computes what LiteRT's reference kernels compute, on the same file
    ref = file_detections(_tflite.interpreter((tmp_path / "tflm.tflite").read_bytes(),
                                              target="litert-reference"), ds.x_test[:100])
    same = np.mean([same_detections(a, b) for a, b in zip(found["tflm"], ref, strict=True)])
    assert same >= 0.99
    assert sum(len(d.scores) for d in ref) > 50  # it does detect


def _pycocotools_map50(folder, detections, size):
    """mAP@0.5 computed here from the YOLO label files, straight with pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, label in enumerate(sorted((folder / "labels").glob("*.txt"))):
        images.append({"id": i, "width": size, "height": size})
        for line in label.read_text().split("\n"):
            if line.strip():
                c, cx, cy, w, h = (float(v) for v in line.split())
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c),
                             "bbox": [(cx - w / 2) * size, (cy - h / 2) * size, w * size,
                                      h * size], "area": w * h * size * size, "iscrowd": 0})
        d = detections[i]
        for (y0, x0, y1, x1), c, s in zip(d.boxes, d.classes, d.scores, strict=True):
            dets.append({"image_id": i, "category_id": int(c), "score": float(s),
                         "bbox": [float(x0) * size, float(y0) * size,
                                  float(x1 - x0) * size, float(y1 - y0) * size]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": c} for c in range(6)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1])


@pytest.mark.slow
def test_bench_map50_on_a_yolo_folder_is_pycocotools_own(detector, tmp_path):
    model, _, path = detector
    x, y = tfc.data.make_shapes_detect(60, image_size=96, seed=99)  # images nobody trained on
    folder = write_yolo(tmp_path / "yolo", x, y, tfc.data.SHAPE_CLASSES)
    runner = CliRunner()
    out = tmp_path / "det.tflite"
    done = runner.invoke(main, ["export", str(path), "-o", str(out), "--data",
                                str(folder), "--detection-postprocess",
                                "--score-threshold", "0.05"])
    assert done.exit_code == 0, done.output
    assert "the same detections as the Keras model" in done.output
    done = runner.invoke(main, ["bench", str(out), "--data", str(folder), "--split", "all",
                                "--metric", "map50", "--runs", "3", "--json"])
    assert done.exit_code == 0, done.output
    benched = json.loads(done.output[done.output.index("["):])[0]["accuracy"]
    ds = tfc.data.load(folder, test_fraction=0.5)
    files = sorted(ds.train.files + ds.test.files)
    from tfcompress.data._parts import read_image

    images = np.stack([read_image(f, (96, 96), "RGB") for f in files]).astype(np.float32) / 255
    found = file_detections(_tflite.interpreter(out.read_bytes()), images)
    assert benched == pytest.approx(_pycocotools_map50(folder, found, 96), abs=1e-3)
    assert benched > 0.05


def test_bad_detection_input_gets_one_line(detector, tmp_path):
    model, ds, path = detector
    cnn = tfc.reference.reference_cnn()
    with pytest.raises(ValueError, match="needs a detector that carries its anchors"):
        to_tflite(cnn, tmp_path / "c.tflite", "float32", detection_postprocess=True)
    assert not (tmp_path / "c.tflite").exists()
    mnist = tfc.data.load("mnist")
    with pytest.raises(ValueError, match="its targets are not boxes"):
        tfc.compress(cnn, mnist, "quick", tmp_path / "run", metric="map50")
    assert not (tmp_path / "run").exists()
    done = CliRunner().invoke(main, ["export", str(path), "-o", str(tmp_path / "d.tflite"),
                                     "--score-threshold", "0.2"])
    assert done.exit_code != 0 and "goes with --detection-postprocess" in done.output


def test_sensitivity_factorize_and_a_student_work_on_a_detector(detector, tmp_path):
    from tfcompress.debug import sensitivity
    from tfcompress.detection import anchors_of
    from tfcompress.distillation import distill, make_student
    from tfcompress.lowrank import factorize

    model, ds, _ = detector
    scan = sensitivity(model, ds, "channels", 0.5, num_samples=40)
    assert scan.metric["name"] == "map50" and len(scan.layers) > 5  # ranked by mAP
    low = factorize(model, rank_ratio=0.5, min_params=4096)
    assert low.output_shape == model.output_shape
    assert np.array_equal(anchors_of(low), anchors_of(model))
    student = make_student(model, 0.5)
    assert student.count_params() < 0.5 * model.count_params()
    trained, result = distill(model, student, ds, epochs=1, batch_size=32)
    assert np.array_equal(anchors_of(trained), anchors_of(model))
    assert result.student_accuracy is not None  # scored by mAP@0.5
