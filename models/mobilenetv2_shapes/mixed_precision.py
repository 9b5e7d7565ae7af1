"""Where MobileNetV2's post-training int8 loses accuracy, and how much keeping a few layers in
float gives back.

Trains the card's MobileNetV2 (alpha 0.35, 96x96 `shapes`, 15 epochs, seed 0), exports it as
post-training int8 (the converter's min/max calibration on 200 training images), then:
- `tfcompress.debug.layer_errors` on 64 validation images: the layers that add the most error;
- `tfcompress.debug.sensitivity(..., "quantize")` on the 240 validation images;
- int8 files with the debugger's top 1 and top 3 layers in float, and with the scan's choice
  (`scan.float_layers(budget=0)`: up to 3 layers and the layers reading them);
and measures each file in LiteRT on the 600 test images, timed side by side with the float32
and all-int8 files (p50, 1 thread). Then the same for a file calibrated on a single image
(one that loses accuracy), against 8 and 200 calibration images.

    python models/mobilenetv2_shapes/mixed_precision.py   # -> mixed_precision.{json,md}
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for _shared
import _shared  # noqa: E402

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> dict:
    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress.bench import benchmark, time_side_by_side
    from tfcompress.debug import layer_errors, sensitivity
    from tfcompress.export import to_tflite

    ds, val = tfc.data.load("shapes", seed=0, image_size=96, num_samples=3000).hold_out(seed=0)
    keras.utils.set_random_seed(0)
    model = tfc.reference.compile_for_classification(
        tfc.reference.reference_mobilenet_v2(ds.input_shape, ds.num_classes), 3e-3)
    model.fit(ds.x_train, ds.y_train, epochs=15, batch_size=32, verbose=2)
    work = Path(tempfile.mkdtemp(prefix="tfc-mixed-"))
    files = {"float32": to_tflite(model, work / "float32.tflite", "float32"),
             "int8": to_tflite(model, work / "int8.tflite", "int8", representative_data=ds)}
    errors = layer_errors(model, files["int8"].path, val, num_samples=64)
    errors.save(work / "debug")
    scan = sensitivity(model, val, "quantize", num_samples=len(val[0]))
    choices = {"debugger top 1": errors.culprits(1), "debugger top 3": errors.culprits(3),
               "scan (float_layers)": scan.float_layers(budget=0.0)}
    for name, layers in choices.items():
        if layers:
            files[name] = to_tflite(model, work / f"{name.split()[0]}_{len(layers)}.tflite",
                                    "int8", representative_data=ds, float_layers=layers)
    paths = [r.path for r in files.values()]
    times = time_side_by_side(paths, ds, threads=1, runs=200, warmup=10)
    rows = {}
    for (name, report), t in zip(files.items(), times, strict=True):
        bench = benchmark(report.path, ds, runs=1)
        rows[name] = {"accuracy": bench.accuracy, "size_bytes": report.size_bytes,
                      "p50_ms": float(np.percentile(t, 50)),
                      "float_layers": choices.get(name, []),
                      "float_ops": [o.op for o in report.float_ops]}
    gap = rows["float32"]["accuracy"] - rows["int8"]["accuracy"]
    for row in rows.values():
        row["gap_recovered"] = (None if gap <= 0 else
                                (row["accuracy"] - rows["int8"]["accuracy"]) / gap)
    # A file that does lose accuracy: calibrated on one image, as with a representative
    # dataset that yields a single batch. The debugger's RMSE in int8 steps says why.
    bad = {}
    one = to_tflite(model, work / "int8_1image.tflite", "int8", representative_data=ds,
                    num_calibration_samples=1)
    bad_errors = layer_errors(model, one.path, val, num_samples=64)
    culprits = bad_errors.culprits(3)
    bad["1 calibration image"] = {"accuracy": benchmark(one.path, ds, runs=1).accuracy,
                                  "float_layers": []}
    mixed = to_tflite(model, work / "int8_1image_mixed.tflite", "int8",
                      representative_data=ds, num_calibration_samples=1,
                      float_layers=culprits)
    bad["1 calibration image, debugger top 3 in float"] = {
        "accuracy": benchmark(mixed.path, ds, runs=1).accuracy, "float_layers": culprits}
    for n in (8, 200):
        r = to_tflite(model, work / f"int8_{n}images.tflite", "int8", representative_data=ds,
                      num_calibration_samples=n)
        bad[f"{n} calibration images"] = {"accuracy": benchmark(r.path, ds, runs=1).accuracy,
                                          "float_layers": []}
    return {"rows": rows, "worst_layers": [e.to_dict() for e in errors.worst(5)],
            "scan": scan.to_dict(), "poor_calibration": bad,
            "poor_calibration_worst": [e.to_dict() for e in bad_errors.worst(5)],
            "work": str(work)}


def markdown(out: dict) -> str:
    rows = out["rows"]
    f32 = rows["float32"]
    lines = [
        "# MobileNetV2 (alpha 0.35) on `shapes`: where post-training int8 loses accuracy",
        "",
        "Produced by `python models/mobilenetv2_shapes/mixed_precision.py` (seed 0; test "
        "accuracy on 600 images in LiteRT; p50 latency with every file timed side by side, "
        "1 thread).",
        "",
        "Layers adding the most error in the all-int8 file (`tfcompress debug`, 64 validation "
        "images):",
        "",
        "| layer | op | SNR dB | RMSE / int8 step | error added |",
        "|---|---|---|---|---|",
    ]
    for e in out["worst_layers"]:
        lines.append(f"| {e['layer']} | {e['op']} | {e['snr_db']:.1f} | "
                     f"{e['rmse_in_scale']:.2f} | {100 * e['noise_added']:+.3f} % |")
    lines += ["", "| file | layers kept in float | accuracy | gap to float32 recovered | size "
              "(bytes) | p50 vs float32 |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rec = "-" if r["gap_recovered"] is None or name == "float32" else \
            f"{100 * r['gap_recovered']:.0f} %"
        lines.append(f"| {name} | {', '.join(r['float_layers']) or '-'} | "
                     f"{100 * r['accuracy']:.2f} % | {rec} | {r['size_bytes']:,} | "
                     f"{f32['p50_ms'] / r['p50_ms']:.2f}x |")
    lines += ["", "A file that does lose accuracy, from a poor calibration (one image); the "
              "worst layers by the debugger:", "",
              "| layer | op | SNR dB | RMSE / int8 step | largest error | error added |",
              "|---|---|---|---|---|---|"]
    for e in out["poor_calibration_worst"]:
        lines.append(f"| {e['layer']} | {e['op']} | {e['snr_db']:.1f} | "
                     f"{e['rmse_in_scale']:.2f} | {e['max_error']:.3g} | "
                     f"{100 * e['noise_added']:+.2f} % |")
    lines += ["", "| file | accuracy |", "|---|---|"]
    for name, r in out["poor_calibration"].items():
        kept = f" ({', '.join(r['float_layers'])})" if r["float_layers"] else ""
        lines.append(f"| {name}{kept} | {100 * r['accuracy']:.2f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _shared.write_results(HERE, "mixed_precision", main(), markdown)
