"""int4 against int8 weights through quantization-aware training, in TFLite Micro.

For the reference CNN on the embedded MNIST digits and the MobileNetV2 (alpha 0.35) of the
card on `shapes` at 96 x 96: the float baseline is trained until its validation accuracy
stops improving (early stopping on held-out training images, best weights kept); then the
same quantization-aware fine-tuning (same epochs, learning rate and seed) runs with 8-bit
weights, with 4-bit weights everywhere, with 4-bit weights except the depthwise layers (9
weights a channel: little flash, much error), and with the layers an `int4` sensitivity scan
picks within one point of int8 (`--weight-bits auto` on the command line). Each is exported
for TFLite Micro (`target="tflm"`) and scored there on the test images, which no training
saw. Model bytes are the flash the file takes.

    python models/accuracy/int4_qat.py            # both networks, about 15 minutes on 2 cores
    python models/accuracy/int4_qat.py --quick    # the CNN only, shorter training
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _shared import write_results  # noqa: E402


def converged(model, train, val, max_epochs: int, batch_size: int, patience: int = 4):
    """Fits `model` until its validation accuracy stops improving; returns the epochs run."""
    import keras

    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience,
                                         restore_best_weights=True, mode="max")
    history = model.fit(train.x_train, train.y_train, validation_data=val, epochs=max_epochs,
                        batch_size=batch_size, callbacks=[stop], verbose=0)
    return len(history.history["loss"]), max(history.history["val_accuracy"])


def qat(model, train, val, weight_bits, epochs: int, learning_rate: float, seed: int):
    import keras

    import tfcompress as tfc

    keras.utils.set_random_seed(seed)
    q = tfc.quantization.quantize_aware(model, weight_bits=weight_bits)
    q.compile(keras.optimizers.Adam(learning_rate),  # the reference networks output logits
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    q.fit(train.x_train, train.y_train, epochs=epochs, batch_size=32, verbose=0)
    return q


def measure(name: str, build, data, cfg: dict, folder: Path) -> dict:
    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress import _graph

    full = data()
    train, val = full.hold_out(0.15, seed=0)
    keras.utils.set_random_seed(0)
    model = build(full)
    start = time.time()
    epochs, val_acc = converged(model, train, val, cfg["max_epochs"], cfg["batch_size"])
    test = (full.x_test, full.y_test)
    row = {"network": name, "params": int(model.count_params()),
           "baseline_epochs": epochs, "baseline_val_accuracy": round(100 * val_acc, 2),
           "float32_test_accuracy": round(100 * float(np.mean(
               model.predict(full.x_test, verbose=0).argmax(-1) == full.y_test)), 2),
           "variants": []}
    depthwise = [layer.name for layer in _graph.all_layers(model)
                 if isinstance(layer, keras.layers.DepthwiseConv2D)]
    scan = tfc.debug.sensitivity(model, val, "int4")
    auto = scan.int4_layers(0.01)
    variants = (("int8 weights", 8), ("int4 weights", 4),
                ("int4, depthwise int8", {**{n: 8 for n in depthwise}, "*": 4}),
                (f"auto: int4 in {len(auto)} of {len(scan.layers)} layers", auto or 8))
    for i, (label, bits) in enumerate(variants):
        q = qat(model, train, val, bits, cfg["qat_epochs"], cfg["qat_lr"], seed=0)
        path = folder / f"{name}_{i}.tflite"
        report = tfc.export.to_tflite(q, path, "int8", target="tflm", verify_data=test)
        scored = tfc.bench.benchmark(path, test, target="tflm", runs=2, warmup=1)
        row["variants"].append({
            "weights": label, "model_bytes": report.size_bytes,
            "weight_bytes": weight_bytes(path.read_bytes()),
            "arena_bytes": report.micro.arena_bytes,
            "int4_tensors": report.weight_bits.get(4, 0),
            "tflm_test_accuracy": round(100 * scored.accuracy, 2),
            "agreement_with_keras": round(100 * report.agreement, 2)})
    row["minutes"] = round((time.time() - start) / 60, 1)
    return row


def weight_bytes(content: bytes) -> int:
    """Bytes of the file's int8 and int4 constant tensors (the weights, without their scales
    and zero points, the int32 biases and the graph)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    graph, total = model.Subgraphs(0), 0
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        if tensor.Type() in (schema.TensorType.INT8, schema.TensorType.INT4):
            total += model.Buffers(tensor.Buffer()).DataLength()
    return total


def markdown(result: dict) -> str:
    lines = ["# int4 against int8 weights (QAT), in TFLite Micro", "",
             "Command: `python models/accuracy/int4_qat.py" +
             (" --quick" if result["settings"]["quick"] else "") + "`", "",
             "| network | weights | test accuracy in TFLM | vs int8 | model bytes | "
             "int8 / this | weight bytes | int8 / this | arena | int4 tensors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["networks"]:
        base = row["variants"][0]
        lines.append(f"| {row['network']} | float32 (baseline, {row['baseline_epochs']} "
                     f"epochs to converge) | {row['float32_test_accuracy']:.2f} % (Keras) | "
                     "| | | | | | |")
        for v in row["variants"]:
            delta = v["tflm_test_accuracy"] - base["tflm_test_accuracy"]
            lines.append(
                f"| {row['network']} | {v['weights']} | {v['tflm_test_accuracy']:.2f} % | "
                f"{delta:+.2f} | {v['model_bytes']:,} | "
                f"{base['model_bytes'] / v['model_bytes']:.2f}x | {v['weight_bytes']:,} | "
                f"{base['weight_bytes'] / v['weight_bytes']:.2f}x | {v['arena_bytes']:,} | "
                f"{v['int4_tensors']} |")
    s = result["settings"]
    lines += ["", f"QAT: {s['qat_epochs']} epochs at Adam({s['qat_lr']}), batch 32, seed 0, the "
              "same for every variant. Test images: held out from all training; the baseline "
              "stops when the accuracy on validation images held out of its training part "
              "stops improving (patience 4, best weights kept). Model bytes: the file (flash); "
              "weight bytes: its int8 and int4 weight tensors alone. The rest, which 4-bit "
              "weights do not shrink, is the graph, the int32 biases and a float32 scale per "
              "channel of every weight and bias (the all-zero zero points are one shared "
              "vector per channel count in a `tflm` file). Arena: TFLite Micro unpacks int4 "
              "kernels into a scratch buffer, so RAM grows by the largest unpacked kernel.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import tfcompress as tfc

    cfg = {"quick": args.quick, "qat_epochs": 2 if args.quick else 8, "qat_lr": 2e-4,
           "max_epochs": 8 if args.quick else 60, "batch_size": 32}
    networks = [("reference CNN / mnist", lambda: tfc.data.load("mnist"),
                 lambda d: tfc.reference.compile_for_classification(
                     tfc.reference.reference_cnn()))]
    if not args.quick:
        networks.append((
            "MobileNetV2 0.35 / shapes 96", lambda: tfc.data.load(
                "shapes", seed=0, image_size=96, num_samples=2000),
            lambda d: tfc.reference.compile_for_classification(
                tfc.reference.reference_mobilenet_v2(d.input_shape, d.num_classes), 3e-3)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data, build in networks:
            rows.append(measure(name.split(" /")[0].replace(" ", "_"), build, data, cfg,
                                Path(tmp)))
            rows[-1]["network"] = name
    write_results(HERE, "int4_qat" + ("_quick" if args.quick else ""),
                  {"settings": cfg, "networks": rows}, markdown)


if __name__ == "__main__":
    main()
