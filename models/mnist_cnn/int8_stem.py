"""Where int8 time goes in the reference CNN on this CPU, and what folding the stem's pooling buys.

    python models/mnist_cnn/int8_stem.py     # -> int8_stem_results.md / .json beside this file

Every file is timed side by side (`tfcompress.bench.time_side_by_side`): the whole CNN and its
first layer alone (conv1 + BatchNorm + ReLU) in float32 and int8, channel-thinned copies, and
copies whose first pooling is folded into conv1's stride (`make_student(fold_pooling=True)`).
Latency does not depend on the weights' values, so the models are not trained; int8 files are
calibrated on real digits. About a minute on 2 CPU cores.
"""

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()

    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress.distillation import make_student
    from tfcompress.reference import reference_cnn

    ds = tfc.data.load("mnist")
    keras.utils.set_random_seed(0)
    cnn = reference_cnn()
    models = {"CNN": cnn,
              "first layer alone (conv1, 1 -> 16 channels, 28x28)":
                  keras.Model(cnn.input, cnn.get_layer("relu1").output)}
    for ratio in (0.5, 0.75, 0.85):
        models[f"CNN, {ratio:.0%} of channels removed"] = make_student(cnn, ratio)
    for ratio in (0.5, 0.75):
        models[f"CNN, {ratio:.0%} of channels removed, pool1 folded into conv1"] = make_student(
            cnn, ratio, fold_pooling=True)

    work = Path(tempfile.mkdtemp(prefix="tfc-int8-stem-"))
    paths, rows = [], []
    for i, (name, model) in enumerate(models.items()):
        for mode in ("float32", "int8"):
            path = work / f"{i}_{mode}.tflite"
            tfc.export.to_tflite(model, path, mode, ds if mode == "int8" else None)
            paths.append(path)
            rows.append((name, mode))
    times = tfc.bench.time_side_by_side(paths, ds, runs=args.runs, rounds=20)
    p50 = [float(np.percentile(t, 50)) for t in times]
    base = p50[0]  # the CNN as float32
    results = [{"model": name, "mode": mode, "p50_ms": round(ms, 4),
                "faster_than_float32_cnn": round(base / ms, 2),
                "size_bytes": os.path.getsize(path)}
               for (name, mode), ms, path in zip(rows, p50, paths, strict=True)]
    machine = (f"{platform.machine()}, {os.cpu_count()} cores; TensorFlow "
               f"{__import__('tensorflow').__version__}, Keras {keras.__version__}")
    (HERE / "int8_stem_results.json").write_text(json.dumps(
        {"machine": machine, "runs": args.runs, "results": results}, indent=2) + "\n")
    lines = ["# int8 vs float32 in LiteRT on the reference CNN: the stem",
             "",
             f"Produced by `python models/mnist_cnn/int8_stem.py` on {machine}. LiteRT, 1 "
             f"thread, p50 of {args.runs} runs; every file timed side by side in 20 turns.",
             "",
             "| model | float32 p50 | int8 p50 | int8 x faster than the float32 CNN |",
             "|---|---|---|---|"]
    for i in range(0, len(results), 2):
        f32, i8 = results[i], results[i + 1]
        lines.append(f"| {f32['model']} | {f32['p50_ms']:.4f} ms | {i8['p50_ms']:.4f} ms | "
                     f"{i8['faster_than_float32_cnn']:.2f}x |")
    (HERE / "int8_stem_results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
