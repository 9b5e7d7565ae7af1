"""Detection data: `shapes-detect`, YOLO folders and COCO files read into the same targets,
and one line naming the file and line for every kind of bad annotation."""

import json

import numpy as np
import pytest
from PIL import Image

import tfcompress as tfc
from tfcompress.data import make_shapes_detect


def _objects(y):
    return [row[row[:, 0] >= 0] for row in y]


def test_shapes_detect_is_seeded_and_its_boxes_hold_the_objects():
    x, y = make_shapes_detect(40, image_size=64, seed=3)
    x2, y2 = make_shapes_detect(40, image_size=64, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    counts = (y[:, :, 0] >= 0).sum(axis=1)
    assert counts.min() >= 1 and counts.max() >= 3  # several objects in an image
    boxes = np.concatenate(_objects(y))
    assert set(np.unique(boxes[:, 0]).astype(int)) <= set(range(6))
    assert (boxes[:, 1:] >= 0).all() and (boxes[:, 1:] <= 1).all()
    assert (boxes[:, 3] > boxes[:, 1]).all() and (boxes[:, 4] > boxes[:, 2]).all()
    sizes = boxes[:, 3] - boxes[:, 1]
    assert 0.08 < sizes.min() and sizes.max() < 0.5
    ds = tfc.data.load("shapes-detect", num_samples=50, image_size=64)
    assert ds.input_shape == (64, 64, 3) and ds.y_train.shape[1:] == (4, 5)
    assert ds.class_names == tfc.data.SHAPE_CLASSES and ds.train.label_max() is None


def _write_images(folder, x):
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(x):
        name = f"img{i:03d}.png"
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / name)
        names.append(name)
    return names


def write_yolo(root, x, y, names=None):
    files = _write_images(root / "images", x)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for f, rows in zip(files, _objects(y), strict=True):
        lines = [f"{int(c)} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"
                 for c, y0, x0, y1, x1 in rows]
        (root / "labels" / f.replace(".png", ".txt")).write_text("\n".join(lines) + "\n")
    if names:
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def write_coco(root, x, y, size=64):
    files = _write_images(root / "images", x)
    anns = []
    for i, rows in enumerate(_objects(y)):
        for c, y0, x0, y1, x1 in rows.tolist():
            anns.append({"id": len(anns) + 7, "image_id": i + 100, "category_id": int(c) * 2 + 1,
                         "bbox": [x0 * size, y0 * size, (x1 - x0) * size, (y1 - y0) * size],
                         "area": 1.0, "iscrowd": 0})
    data = {"images": [{"id": i + 100, "file_name": f, "width": size, "height": size}
                       for i, f in enumerate(files)],
            "annotations": anns,
            "categories": [{"id": c * 2 + 1, "name": n} for c, n in
                           enumerate(tfc.data.SHAPE_CLASSES)]}
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("layout", ["yolo", "coco"])
def test_yolo_and_coco_files_load_as_the_boxes_they_were_written_from(tmp_path, layout):
    x, y = make_shapes_detect(12, image_size=64, seed=5)
    source = (write_yolo(tmp_path / "yolo", x, y, tfc.data.SHAPE_CLASSES) if layout == "yolo"
              else write_coco(tmp_path / "coco", x, y))
    ds = tfc.data.load(source, test_fraction=0.25)
    assert ds.class_names == tfc.data.SHAPE_CLASSES
    assert isinstance(ds.train, tfc.data.FilesPart)  # read a batch at a time
    got = {}
    for part in (ds.train, ds.test):
        for f, t in zip(part.files, part.labels, strict=True):
            got[int(f[-7:-4])] = t
    assert sorted(got) == list(range(12))
    for i, rows in enumerate(_objects(y)):
        mine = got[i][got[i][:, 0] >= 0]
        assert mine.shape == rows.shape
        np.testing.assert_allclose(mine, rows, atol=1e-5)
    xb, yb = next(ds.test.batches(8))
    assert xb.shape == (3, 64, 64, 3) and yb.shape[1:] == (4, 5)


BAD_YOLO = {
    "fields": ("0 0.5 0.5 0.2", "labels/img000.txt, line 2: expected 'class cx cy w h'"),
    "class": ("9 0.5 0.5 0.2 0.2", "labels/img000.txt, line 2: class 9 is unknown"),
    "outside": ("1 0.95 0.5 0.2 0.2", "labels/img000.txt, line 2: the box goes outside"),
    "empty": ("1 0.5 0.5 0.0 0.2", "labels/img000.txt, line 2: the box has no area"),
}


@pytest.mark.parametrize("kind", sorted(BAD_YOLO))
def test_a_bad_yolo_line_is_named_with_its_file_and_line(tmp_path, kind):
    x, y = make_shapes_detect(3, image_size=64, seed=1)
    root = write_yolo(tmp_path / "d", x, y, tfc.data.SHAPE_CLASSES)
    label = root / "labels" / "img000.txt"
    first = label.read_text().splitlines()[0]
    line, message = BAD_YOLO[kind]
    label.write_text(f"{first}\n{line}\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as e:
        tfc.data.load(root)
    assert "\n" not in str(e.value)


def test_a_label_file_without_its_image_is_refused(tmp_path):
    x, y = make_shapes_detect(3, image_size=64, seed=1)
    root = write_yolo(tmp_path / "d", x, y)
    (root / "images" / "img001.png").unlink()
    with pytest.raises(ValueError, match="img001.txt: this label file has no image"):
        tfc.data.load(root)


@pytest.mark.parametrize("kind,message", [
    ("missing", r"images\[1\]: the image 'img001.png' is missing"),
    ("category", r"annotations\[0\] \(id 7\): category_id 99 is not in 'categories'"),
    ("outside", r"annotations\[0\] \(id 7\): the box goes outside the image"),
])
def test_a_bad_coco_annotation_is_named(tmp_path, kind, message):
    x, y = make_shapes_detect(3, image_size=64, seed=1)
    path = write_coco(tmp_path / "c", x, y)
    data = json.loads(path.read_text())
    if kind == "missing":
        (path.parent / "images" / "img001.png").unlink()
    elif kind == "category":
        data["annotations"][0]["category_id"] = 99
    else:
        data["annotations"][0]["bbox"][0] = 60.0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        tfc.data.load(path)
