"""QAT of every layer against QAT with `float_layers="auto"` on MobileNetV2, over 3 seeds.

Per seed: MobileNetV2 (alpha 0.35) on `shapes` at 96 x 96, 2,000 images (10 % of the training
part held out), trained until its validation accuracy stops improving; a quantize
sensitivity scan on the held-out images; then one epoch of QAT from the trained model, either
of every layer or with the layers the scan picks within a 1-point budget kept in float; both
exported to int8 (the second through post-training int8 of its trained weights, its float
layers left out) and scored in LiteRT on the 400 test images.

    python models/mobilenetv2_shapes/auto_float_seeds.py   # -> auto_float_seeds.{json,md}
"""

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for _shared
import _shared  # noqa: E402

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(seeds: int = 3) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress.debug import sensitivity
    from tfcompress.export import to_tflite
    from tfcompress.quantization import train_quantized

    work = Path(tempfile.mkdtemp(prefix="tfc-autofloat-"))
    rows = []
    for seed in range(seeds):
        full, train, val, model, epochs = _shared.trained_mobilenet_v2(seed)
        scan = sensitivity(model, val, "quantize", num_samples=len(val[0]))
        row = {"seed": seed, "epochs": epochs,
               "float": tfc._training.accuracy(model, full.x_test, full.y_test),
               "all_quantized_scan": scan.all_changed, "baseline_scan": scan.baseline,
               "float_layers": scan.float_layers()}
        for name, kwargs in (("every_layer", {}),
                             ("auto", {"float_layers": "auto", "sensitivity": scan})):
            keras.utils.set_random_seed(seed)
            q, _ = train_quantized(model, train, epochs=1, batch_size=32, **kwargs)
            path = work / f"{name}_{seed}.tflite"
            report = to_tflite(q, path, "int8", representative_data=train)
            row[name] = {"accuracy": tfc.bench.benchmark(path, full, runs=1).accuracy,
                         "float_ops": len(report.float_ops)}
        rows.append(row)
        print(seed, json.dumps(row), flush=True)
    summary = {"float": statistics.mean(r["float"] for r in rows),
               **{n: statistics.mean(r[n]["accuracy"] for r in rows)
                  for n in ("every_layer", "auto")}}
    return {"summary": summary, "seeds": rows}


def markdown(out: dict) -> str:
    s = out["summary"]
    kept = "; ".join(", ".join(r["float_layers"]) or "none" for r in out["seeds"])
    return "\n".join([
        "# MobileNetV2: QAT of every layer vs `float_layers=\"auto\"` (3 seeds)",
        "",
        "Produced by `python models/mobilenetv2_shapes/auto_float_seeds.py` (MobileNetV2 "
        "alpha 0.35, `shapes` 96 x 96, trained until its held-out accuracy stopped improving: "
        f"{', '.join(str(r['epochs']) for r in out['seeds'])} epochs; one QAT epoch; int8 in "
        f"LiteRT on 400 test images; means over {len(out['seeds'])} seeds).",
        "",
        "| | test accuracy |",
        "|---|---|",
        f"| float32 Keras model | {100 * s['float']:.2f} % |",
        f"| QAT, every layer int8 | {100 * s['every_layer']:.2f} % |",
        f"| QAT, float_layers=\"auto\" (1-point budget) | {100 * s['auto']:.2f} % |",
        "",
        f"Layers the scan kept in float, per seed: {kept}.",
        "",
    ])


if __name__ == "__main__":
    _shared.write_results(HERE, "auto_float_seeds", main(), markdown)
