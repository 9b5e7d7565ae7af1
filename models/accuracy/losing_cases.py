"""Where post-training quantization really loses accuracy, and what wins it back.

Each network (the reference CNN and DS-CNN on the MNIST digits, ResNet-8 on `shapes` at 32 x
32, MobileNetV2 0.35 and MobileNetV1 0.25 on `shapes` at 96 x 96) is trained until its
validation accuracy stops improving (early stopping on images held out of its training part,
best weights kept), then quantized after training in
the settings users ask for: int8 with per-channel weights calibrated on 200, 8 and 1
training images; per-tensor weights; int4 weights. Every file is scored in LiteRT on test
images no step saw. A setting that loses at least 2 points against float32 is a losing
case; for each, the remedies tfcompress has are tried and scored the same way:

- ranges from activation statistics (`calibrate_ranges`, percentile 99.99 and MSE) instead of
  the converter's min/max;
- cross-layer equalization and bias correction (`calibrate_ranges(equalize=True,
  bias_correction=True)`), each alone and both; AdaRound (`adaround=True`: each weight
  rounded up or down as its layer's output needs);
- `float_layers="auto"` (int8 cases): the layers a quantize sensitivity scan picks, in float;
  and the same layers at 16-bit activations instead (`int16_layers=`);
- int4 cases: depthwise layers at 8 bits; the layers an `int4` scan picks within one point;
  the layers `tfcompress debug` (`layer_errors` on the plain int4 file against the float
  model) blames most, as many kept at 8 bits as the scan keeps (`float_layers` and
  `int16_layers` keep 8-bit weights' activations wider, which is not what int4 loses);
- quantization-aware training in the same setting (2 epochs, Adam 1e-4).

    python models/accuracy/losing_cases.py                  # all networks, ~35 min, 2 cores
    python models/accuracy/losing_cases.py --only cnn,dscnn
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _shared import fit_converged, write_results  # noqa: E402

LOSS = 2.0  # points: what makes a losing case


def networks():
    import tfcompress as tfc

    ref = tfc.reference
    mnist = lambda: tfc.data.load("mnist")  # noqa: E731

    def shapes(size):
        return lambda: tfc.data.load("shapes", seed=0, image_size=size, num_samples=2000)

    return {
        "cnn": ("reference CNN / MNIST", mnist, lambda d: ref.reference_cnn(), 1e-3),
        "dscnn": ("DS-CNN / MNIST", mnist, lambda d: ref.reference_ds_cnn(
            d.input_shape, d.num_classes), 1e-3),
        "resnet8": ("ResNet-8 / shapes 32", shapes(32), lambda d: ref.reference_resnet8(
            d.input_shape, d.num_classes), 1e-3),
        "mobilenetv2": ("MobileNetV2 0.35 / shapes 96", shapes(96),
                        lambda d: ref.reference_mobilenet_v2(d.input_shape, d.num_classes),
                        3e-3),
        # depthwise-heavy with ReLU6 and no residuals: the network per-tensor weights are
        # known to break (Nagel et al., 2019)
        "mobilenetv1": ("MobileNetV1 0.25 / shapes 96", shapes(96), lambda d: mobilenet_v1(
            d.input_shape, d.num_classes), 3e-3),
    }


def mobilenet_v1(input_shape, num_classes):
    import keras

    return keras.applications.MobileNet(input_shape, alpha=0.25, weights=None,
                                        classes=num_classes, classifier_activation=None)


def run_network(key: str, folder: Path) -> dict:
    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress import _graph
    from tfcompress.quantization import calibrate_ranges, train_quantized

    title, data, build, lr = networks()[key]
    full = data()
    train, val = full.hold_out(0.15, seed=0)
    keras.utils.set_random_seed(0)
    model = tfc.reference.compile_for_classification(build(full), lr)
    start = time.time()
    epochs = fit_converged(model, (train.x_train, train.y_train), val, keras.callbacks,
                           batch_size=32, max_epochs=60)
    test = (full.x_test, full.y_test)
    x = train.x_train
    float_acc = 100 * float(np.mean(model.predict(full.x_test, verbose=0).argmax(-1)
                                    == full.y_test))

    def score(make, name) -> float:
        """Top-1 in LiteRT of a file `make` wrote, or of the int8 file of the quantization-
        aware model it returned."""
        made = make()
        if not isinstance(made, Path):
            path = folder / f"{key}_{name}.tflite"
            tfc.export.to_tflite(made, path, "int8", representative_data=x[:200])
            made = path
        return round(100 * tfc.bench.benchmark(made, test, runs=1, warmup=0).accuracy, 2)

    def ptq(samples, float_layers=None, int16_layers=None):
        def make():
            kind = "_auto" if float_layers else "_auto16" if int16_layers else ""
            path = folder / f"{key}_ptq{samples}{kind}.tflite"
            tfc.export.to_tflite(model, path, "int8", representative_data=x[:samples],
                                 num_calibration_samples=samples, float_layers=float_layers,
                                 int16_layers=int16_layers)
            return path
        return make

    def stats(samples=200, method="minmax", **options):
        return lambda: calibrate_ranges(model, x[:samples], method=method,
                                        num_samples=samples, **options)

    def qat(**options):
        return lambda: train_quantized(model, train, epochs=2, learning_rate=1e-4,
                                       **options)[0]

    settings = {
        "int8, 200 calibration images": (ptq(200), {}),
        "int8, 8 calibration images": (ptq(8), {"samples": 8}),
        "int8, 1 calibration image": (ptq(1), {"samples": 1}),
        "per-tensor weights": (stats(per_channel_weights=False),
                               {"per_channel_weights": False}),
        "int4 weights": (stats(weight_bits=4), {"weight_bits": 4}),
    }
    scan = int4_scan = None
    rows = []
    for name, (make, options) in settings.items():
        acc = score(make, name.split(",")[0].replace(" ", "_"))
        row = {"setting": name, "accuracy": acc, "loss": round(float_acc - acc, 2),
               "remedies": {}}
        rows.append(row)
        if row["loss"] < LOSS:
            continue
        samples = options.pop("samples", 200)
        tag = name.split(",")[0].replace(" ", "_") + str(samples)
        for method in ("percentile", "mse"):
            row["remedies"][f"{method} ranges"] = score(
                stats(samples, method, **options), f"{tag}_{method}")
        for repair in ({"equalize": True}, {"bias_correction": True},
                       {"equalize": True, "bias_correction": True}, {"adaround": True}):
            label = " + ".join(k.replace("_", " ") for k in repair)
            try:
                row["remedies"][label] = score(stats(samples, "percentile", **options,
                                                     **repair),
                                               f"{tag}_{''.join(k[0] for k in repair)}")
            except ValueError as e:  # no pair to equalize
                row["remedies"][label] = str(e).split(":")[0]
        if "weight_bits" in options:
            depthwise = [layer.name for layer in _graph.all_layers(model)
                         if isinstance(layer, keras.layers.DepthwiseConv2D)]
            if depthwise:
                row["remedies"]["int4, depthwise int8"] = score(
                    stats(samples, weight_bits={**{k: 8 for k in depthwise}, "*": 4}),
                    f"{tag}_dw8")
            if int4_scan is None:
                int4_scan = tfc.debug.sensitivity(model, (val[0], val[1]), "int4")
            chosen = int4_scan.int4_layers(0.01)
            row["remedies"][f"int4 auto ({len(chosen)} of {len(int4_scan.layers)} layers)"] = (
                score(stats(samples, weight_bits=chosen or 8), f"{tag}_auto4"))
            # The debugger on the plain int4 file: the weighted layers behind the tensors
            # that add the most error, as many at 8 bits as the scan keeps there.
            plain = folder / f"{key}_{tag}_plain.tflite"
            tfc.export.to_tflite(stats(samples, **options)(), plain, "int8")
            errors = tfc.debug.layer_errors(model, plain, val[0], num_samples=64)
            worst = errors.culprits(max(1, len(int4_scan.layers) - len(chosen)))
            row["debug"] = [e.to_dict() for e in errors.worst(5)]
            row["remedies"][f"debugger's {len(worst)} worst layers at 8 bits "
                            f"({', '.join(worst[:4])}{', ...' if len(worst) > 4 else ''})"] = (
                score(stats(samples, weight_bits={**{n: 8 for n in worst}, "*": 4}),
                      f"{tag}_debug8"))
        if not options:  # int8: the layers a sensitivity scan picks, kept in float
            if scan is None:
                scan = tfc.debug.sensitivity(model, (val[0], val[1]), "quantize")
            chosen = scan.float_layers()
            row["remedies"][f"float_layers auto ({', '.join(chosen) or 'none'})"] = score(
                ptq(samples, chosen or None), f"{tag}_auto")
            if chosen:
                row["remedies"]["int16_layers auto (the same layers)"] = score(
                    ptq(samples, int16_layers=chosen), f"{tag}_auto16")
        row["remedies"]["QAT, 2 epochs"] = score(qat(**options), f"{tag}_qat")
    return {"network": title, "key": key, "params": int(model.count_params()),
            "baseline_epochs": epochs, "float32_accuracy": round(float_acc, 2),
            "test_images": int(len(full.y_test)), "settings": rows,
            "minutes": round((time.time() - start) / 60, 1)}


def markdown(result: dict) -> str:
    lines = ["# Losing cases of post-training quantization, and their remedies", "",
             "Command: `python models/accuracy/losing_cases.py`. Accuracy: top-1 in LiteRT on "
             "test images no step saw; loss against the float32 baseline (trained until its "
             f"validation accuracy stopped improving). A loss of {LOSS:g} points or more is a "
             "losing case; its remedies follow it, each with the share of the loss it wins "
             "back.", "",
             "| network (float32) | setting | accuracy | loss | remedy | accuracy | recovered |",
             "|---|---|---|---|---|---|---|"]
    for net in result["networks"]:
        head = f"{net['network']} ({net['float32_accuracy']:.2f} %, " \
               f"{net['baseline_epochs']} epochs)"
        for row in net["settings"]:
            lines.append(f"| {head} | {row['setting']} | {row['accuracy']:.2f} % | "
                         f"{row['loss']:+.2f} | | | |")
            for remedy, acc in row["remedies"].items():
                if isinstance(acc, str):  # the remedy does not apply
                    lines.append(f"| | | | | {remedy} | n/a: {acc} | |")
                    continue
                back = (acc - row["accuracy"]) / row["loss"] if row["loss"] > 0 else 0.0
                lines.append(f"| | | | | {remedy} | {acc:.2f} % | {100 * back:.0f} % |")
            head = ""
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(networks()))
    args = parser.parse_args()
    keys = [k.strip() for k in args.only.split(",")]
    unknown = [k for k in keys if k not in networks()]
    if unknown:
        parser.error(f"unknown network {unknown[0]!r}; known: {', '.join(networks())}")
    partial = HERE / "losing_cases.partial.json"
    done = json.loads(partial.read_text()) if partial.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            if key not in done:
                done[key] = run_network(key, Path(tmp))
                partial.write_text(json.dumps(done, indent=2))
    write_results(HERE, "losing_cases", {"networks": [done[k] for k in keys]}, markdown)
    partial.unlink()


if __name__ == "__main__":
    main()
