"""Detector heads side by side: SSD anchor boxes against an anchor-free head (one point per
cell), same backbone, data and training.

Both `reference_detector(head="ssd")` and `reference_detector(head="anchor_free")` train on
the detection card's data (`shapes-detect`, 96 x 96, 3,000 images, seed 0) until their
validation loss stops improving (patience 6, best weights kept, as `make_card.py`). Each is
then exported as float32 and as int8 with its post-processing in the file, and measured on the
600 test images: mAP@0.5 and mAP@0.5:0.95 (pycocotools), parameters, file sizes, and the
LiteRT latency of all four files timed side by side in one run.

    python models/detection_shapes/compare_heads.py      # writes heads_results.{json,md}

`--centre-radius R` trains the anchor-free head with another centre-sampling radius (a share
of its prior, 2 cells wide; the loss's `CENTRE_RADIUS`) and only prints its scores.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for _shared
import _shared  # noqa: E402

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HEADS = ("ssd", "anchor_free")


def train(head: str, ds, val, seed: int):
    """The reference detector with `head`, trained until its validation loss stops improving;
    `(model, epochs)`."""
    import keras

    from tfcompress.reference import compile_for_detection, reference_detector

    keras.utils.set_random_seed(seed)
    model = compile_for_detection(
        reference_detector(ds.input_shape, ds.num_classes, head=head), 2e-3)
    epochs = _shared.fit_converged(model, (ds.x_train, ds.y_train), val, keras.callbacks,
                                   batch_size=32, monitor="val_loss")
    return model, epochs


def measure(seed: int, runs: int) -> dict:
    import numpy as np

    from tfcompress.bench import benchmark, time_side_by_side
    from tfcompress.export import to_tflite

    ds, val = _shared.detection_data(seed)
    test = (ds.x_test, ds.y_test)
    out, files = {}, []
    with tempfile.TemporaryDirectory() as work:
        for head in HEADS:
            model, epochs = train(head, ds, val, seed)
            row = {"epochs": epochs, "parameters": int(model.count_params()),
                   "anchors": int(model.output_shape[1])}
            for kind, kwargs in (("float32", {}), ("int8", {"detection_postprocess": True})):
                path = Path(work) / f"{head}_{kind}.tflite"
                to_tflite(model, path, kind, ds, **kwargs)
                files.append(path)
                row[kind] = {"bytes": path.stat().st_size, **{
                    m: benchmark(path, test, runs=1, metric=m).accuracy
                    for m in ("map50", "map")}}
            out[head] = row
            print(head, row, flush=True)
        times = time_side_by_side(files, test, runs=runs)
    for (head, kind), t in zip([(h, k) for h in HEADS for k in ("float32", "int8")], times,
                               strict=True):
        out[head][kind]["p50_ms"] = float(np.percentile(t, 50))
    return {"seed": seed, "runs": runs, "test_images": len(ds.x_test), "heads": out,
            "machine": f"{os.cpu_count()} cores"}


def markdown(r: dict) -> str:
    ssd, af = r["heads"]["ssd"], r["heads"]["anchor_free"]

    def pct(v):
        return f"{100 * v:.2f} %"

    rows = [
        "| | SSD anchor boxes (`head=\"ssd\"`) | anchor-free (`head=\"anchor_free\"`) |",
        "|---|---|---|",
        f"| boxes per image (anchors or points) | {ssd['anchors']:,} | {af['anchors']:,} |",
        f"| parameters | {ssd['parameters']:,} | {af['parameters']:,} |",
        f"| epochs to convergence | {ssd['epochs']} | {af['epochs']} |",
    ]
    for kind, words in (("float32", "float32"), ("int8", "int8, post-processing in the file")):
        a, b = ssd[kind], af[kind]
        rows += [
            f"| {words}: mAP@0.5 | {pct(a['map50'])} | {pct(b['map50'])} |",
            f"| {words}: mAP@0.5:0.95 | {pct(a['map'])} | {pct(b['map'])} |",
            f"| {words}: file size | {a['bytes']:,} B | {b['bytes']:,} B |",
            f"| {words}: LiteRT p50 | {a['p50_ms']:.4f} ms | {b['p50_ms']:.4f} ms |",
        ]
    base = ssd["float32"]["p50_ms"]
    rows += [
        f"| int8 with post-processing, faster than the SSD float32 file | "
        f"{base / ssd['int8']['p50_ms']:.2f}x | {base / af['int8']['p50_ms']:.2f}x |",
    ]
    return (
        "# Detector heads: SSD anchor boxes against an anchor-free head\n\n"
        "Produced by `python models/detection_shapes/compare_heads.py`: the reference detector "
        "(same MobileNetV2-style backbone) with either head, trained on `shapes-detect` (96 x "
        f"96, 3,000 images, seed {r['seed']}) until its validation loss stopped improving, "
        f"scored by pycocotools on the {r['test_images']} test images. The int8 files carry "
        "TFLite_Detection_PostProcess (score 0.05, IoU 0.5, 100 detections) and are scored by "
        "their own detections; the float32 files are decoded in Python with the same settings. "
        f"Latency: LiteRT, 1 thread, the four files timed side by side ({r['runs']} runs "
        f"each), {r['machine']}.\n\n" + "\n".join(rows) + "\n")


def radius_variant(radius: float, seed: int) -> dict:
    """The anchor-free head trained with centre-sampling radius `radius`: its test mAP."""
    from tfcompress import _training
    from tfcompress.detection import _loss

    _loss.CENTRE_RADIUS = radius
    ds, val = _shared.detection_data(seed)
    model, epochs = train("anchor_free", ds, val, seed)
    test = (ds.x_test, ds.y_test)
    return {"centre_radius": radius, "epochs": epochs,
            "map50": _training.evaluate(model, test, "map50"),
            "map": _training.evaluate(model, test, "map")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--centre-radius", type=float)
    args = parser.parse_args()
    if args.centre_radius is not None:
        print(json.dumps(radius_variant(args.centre_radius, args.seed)))
        return
    _shared.write_results(HERE, "heads_results", measure(args.seed, args.runs), markdown)


if __name__ == "__main__":
    main()
