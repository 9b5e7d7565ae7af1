"""Detection data on disk, in the two layouts users have: a YOLO folder (`images/` and
`labels/`, one `class cx cy w h` line per object, normalized) and a COCO JSON file with its
images. Both become a `FilesPart` whose targets are `(N, B, 5)` rows `[class, ymin, xmin,
ymax, xmax]` (normalized, class `-1` pads), decoded a batch at a time. Every annotation is
checked before any work: a bad one stops the load with one line naming its file and line."""

import json
import os
from pathlib import Path

import numpy as np

TOLERANCE = 1e-3  # how far a box may poke out of the image (rounding in annotation tools)


def is_yolo_folder(path: Path) -> bool:
    """True for a folder holding `images/` and `labels/`."""
    return path.is_dir() and (path / "images").is_dir() and (path / "labels").is_dir()


def _padded(boxes: list[list[list[float]]]) -> np.ndarray:
    most = max([len(b) for b in boxes] + [1])
    y = np.full((len(boxes), most, 5), -1.0, np.float32)
    for i, rows in enumerate(boxes):
        if rows:
            y[i, :len(rows)] = rows
    return y


def _check_box(ymin: float, xmin: float, ymax: float, xmax: float, where: str) -> None:
    if not (ymax > ymin and xmax > xmin):
        raise ValueError(f"{where}: the box has no area (ymin {ymin:.4g}, xmin {xmin:.4g}, "
                         f"ymax {ymax:.4g}, xmax {xmax:.4g}). Fix or remove this annotation.")
    if min(ymin, xmin) < -TOLERANCE or max(ymax, xmax) > 1 + TOLERANCE:
        raise ValueError(f"{where}: the box goes outside the image (ymin {ymin:.4g}, xmin "
                         f"{xmin:.4g}, ymax {ymax:.4g}, xmax {xmax:.4g}; the image spans 0 to "
                         "1). Fix or remove this annotation.")


def _class_names(root: Path) -> tuple[str, ...] | None:
    """The class names of a YOLO folder: `classes.txt` (one per line) or the `names` of a
    `data.yaml`/`dataset.yaml` beside `images/`, if there is one."""
    text = root / "classes.txt"
    if text.is_file():
        return tuple(line.strip() for line in text.read_text().splitlines() if line.strip())
    for name in ("data.yaml", "dataset.yaml"):
        if (root / name).is_file():
            import yaml

            names = (yaml.safe_load((root / name).read_text()) or {}).get("names")
            if isinstance(names, dict):
                return tuple(str(names[k]) for k in sorted(names))
            if isinstance(names, list):
                return tuple(str(n) for n in names)
    return None


def read_yolo(root: Path, suffixes: tuple[str, ...]
              ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """`(image files, targets (N, B, 5), class names)` of a YOLO folder. An image without a
    label file has no objects; a label file without an image is an error."""
    names = _class_names(root)
    images: dict[str, str] = {}
    for dirpath, _, files in sorted(os.walk(root / "images")):
        for f in sorted(files):
            if f.lower().endswith(suffixes):
                full = os.path.join(dirpath, f)
                images[os.path.splitext(os.path.relpath(full, root / "images"))[0]] = full
    if not images:
        raise ValueError(f"{root / 'images'} holds no images ({', '.join(suffixes)}).")
    labels: dict[str, str] = {}
    for dirpath, _, files in sorted(os.walk(root / "labels")):
        for f in sorted(files):
            if f.endswith(".txt"):
                full = os.path.join(dirpath, f)
                labels[os.path.splitext(os.path.relpath(full, root / "labels"))[0]] = full
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise ValueError(f"{labels[orphans[0]]}: this label file has no image (expected "
                         f"images/{orphans[0]}.jpg or .png). Add the image or remove the file"
                         + (f" ({len(orphans)} such files)." if len(orphans) > 1 else "."))
    boxes, top = [], -1
    for key in images:
        rows = []
        if key in labels:
            for n, line in enumerate(Path(labels[key]).read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{labels[key]}, line {n}"
                parts = line.split()
                try:
                    cls, cx, cy, w, h = (float(v) for v in parts[:5])
                except ValueError:
                    parts = []
                if len(parts) != 5 or cls != int(cls) or cls < 0:
                    raise ValueError(
                        f"{where}: expected 'class cx cy w h' (a class number from 0, then "
                        f"four normalized numbers), got {line.strip()!r}.")
                if names is not None and cls >= len(names):
                    raise ValueError(f"{where}: class {int(cls)} is unknown; the folder names "
                                     f"{len(names)} classes (0..{len(names) - 1}).")
                box = (cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2)
                _check_box(*box, where)
                rows.append([cls, *(min(max(v, 0.0), 1.0) for v in box)])
                top = max(top, int(cls))
        boxes.append(rows)
    if names is None:
        names = tuple(str(i) for i in range(top + 1))
    return list(images.values()), _padded(boxes), names


def read_coco(path: Path, suffixes: tuple[str, ...]
              ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """`(image files, targets (N, B, 5), class names)` of a COCO JSON file. Each image's
    `file_name` is found beside the file or in an `images/` folder beside it; categories
    become classes 0..K-1 in the order of their ids; crowd annotations are left out."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable COCO JSON file ({e}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: a COCO file needs 'images' and 'annotations' lists "
                         "(and 'categories').")
    categories = sorted(data.get("categories") or [], key=lambda c: c.get("id", 0))
    index = {c["id"]: i for i, c in enumerate(categories) if "id" in c}
    names = tuple(str(c.get("name", c["id"])) for c in categories if "id" in c)
    files, sizes, rows_of = [], {}, {}
    for n, image in enumerate(data["images"]):
        where = f"{path}, images[{n}]"
        try:
            image_id, name = image["id"], image["file_name"]
            width, height = float(image["width"]), float(image["height"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: an image needs 'id', 'file_name', 'width' and "
                             "'height'.") from None
        found = next((c for c in (path.parent / name, path.parent / "images" / name)
                      if c.is_file()), None)
        if found is None:
            raise ValueError(f"{where}: the image {name!r} is missing (looked beside the file "
                             "and in images/ beside it).")
        if not str(found).lower().endswith(suffixes):
            raise ValueError(f"{where}: {name!r} is not an image tfcompress reads "
                             f"({', '.join(suffixes)}).")
        sizes[image_id] = (width, height)
        rows_of[image_id] = []
        files.append((image_id, str(found)))
    for n, ann in enumerate(data["annotations"]):
        where = f"{path}, annotations[{n}] (id {ann.get('id', '?')})"
        if ann.get("iscrowd"):
            continue
        if ann.get("image_id") not in sizes:
            raise ValueError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'.")
        if ann.get("category_id") not in index:
            raise ValueError(f"{where}: category_id {ann.get('category_id')!r} is not in "
                             f"'categories' (ids {sorted(index)}).")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: 'bbox' must be [x, y, width, height] in "
                             "pixels.") from None
        width, height = sizes[ann["image_id"]]
        box = (y / height, x / width, (y + h) / height, (x + w) / width)
        _check_box(*box, where)
        rows_of[ann["image_id"]].append(
            [index[ann["category_id"]], *(min(max(v, 0.0), 1.0) for v in box)])
    if not files:
        raise ValueError(f"{path}: the file lists no images.")
    return ([f for _, f in files], _padded([rows_of[i] for i, _ in files]), names)
