"""What an Arm Ethos-U NPU makes of compression, as Vela estimates it: unstructured sparsity
(does its weight compression turn zeros into less flash and time?) and channel counts (which
multiple does the NPU prefer?).

    python models/npu/measure_npu.py      # about 3 minutes on 2 cores; needs the npu extra

- **Sparsity.** The reference CNN and ResNet-8 are trained briefly (MNIST; `shapes` at 32x32),
  then each layer's smallest weights are set to zero (0, 50, 75, 90 %: the pattern magnitude
  pruning leaves) and the model is exported post-training int8 for each configuration:
  compiled size, Vela's flash and estimated time per inference, against the dense file.
- **Channel counts.** A plain 32x32 CNN (three 3x3 convolutions of C channels, stride 2 after
  the first two, a 1x1 of 2C, global pooling, a dense head) for C from 8 to 64 in steps of 4:
  Vela's time against the MACs, so that a count off the NPU's preferred multiple shows as a
  higher time per MAC than the next count up.

- **Rounding on a whole network.** The reference MobileNetV2 (0.35, 96x96, as in its model
  card) thinned uniformly by `make_student` at ratios 0.5 to 0.9, channels rounded to
  multiples of 8 or of 16: Vela's time for each.

Every figure is Vela's own, compiled with its default system configuration and memory mode for
each accelerator. Writes `npu_results.json` and `npu_results.md` beside this script.
"""

import json
import platform
import tempfile
from pathlib import Path

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import _vela
from tfcompress._macs import model_macs
from tfcompress.distillation import make_student
from tfcompress.export import to_tflite

HERE = Path(__file__).parent
TARGETS = ("ethos-u55-128", "ethos-u85-256")
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
CHANNELS = tuple(range(8, 65, 4))


def sparsified(model: keras.Model, sparsity: float) -> keras.Model:
    """A copy with each kernel's smallest-magnitude weights set to zero."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if sparsity == 0:
        return copy
    for layer in copy.layers:
        for name in ("kernel", "depthwise_kernel"):
            weight = getattr(layer, name, None)
            if weight is None:
                continue
            w = keras.ops.convert_to_numpy(weight)
            cut = np.quantile(np.abs(w), sparsity)
            weight.assign(np.where(np.abs(w) <= cut, 0.0, w).astype(w.dtype))
    return copy


def on_npu(model: keras.Model, calib: np.ndarray, target: str, work: str) -> dict:
    report = to_tflite(model, f"{work}/{target}.tflite", "int8", calib, target=target,
                       verify_data=calib[:16]).npu
    return {"inference_ms": report.inference_ms, "cycles": report.cycles,
            "flash_bytes": report.flash_bytes, "sram_bytes": report.sram_bytes,
            "model_bytes": report.model_bytes, "macs": report.macs,
            "npu_ops": len(report.ops) - len(report.cpu_ops), "ops": len(report.ops)}


def trained(name: str) -> tuple[keras.Model, np.ndarray]:
    keras.utils.set_random_seed(0)
    if name == "reference CNN":
        data = tfc.data.load("mnist")
        model = tfc.reference.reference_cnn()
        epochs = 2
    else:
        data = tfc.data.load("shapes", image_size=32, num_samples=3000)
        model = tfc.reference.reference_resnet8(num_classes=data.num_classes)
        epochs = 4
    model = tfc.reference.compile_for_classification(model)
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model, data.x_train[:200]


def plain_cnn(c: int) -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(c, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(c, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(c, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(2 * c, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def main() -> None:
    import tensorflow as tf

    result: dict = {"vela_version": _vela.version(), "tensorflow": tf.__version__,
                    "machine": platform.machine(), "sparsity": {}, "channels": {}}
    with tempfile.TemporaryDirectory() as work:
        for name in ("reference CNN", "ResNet-8"):
            model, calib = trained(name)
            rows = []
            for s in SPARSITIES:
                row = {"sparsity": s, **{t: on_npu(sparsified(model, s), calib, t, work)
                                         for t in TARGETS}}
                rows.append(row)
                print(name, s, {t: round(row[t]["inference_ms"], 4) for t in TARGETS},
                      flush=True)
            result["sparsity"][name] = rows
        calib = np.random.default_rng(0).uniform(0, 1, (64, 32, 32, 3)).astype("float32")
        for c in CHANNELS:
            model = plain_cnn(c)
            row = {t: on_npu(model, calib, t, work) for t in TARGETS}
            row["keras_macs"] = int(model_macs(model))
            result["channels"][c] = row
            print("channels", c, {t: round(row[t]["inference_ms"], 4) for t in TARGETS},
                  flush=True)
        keras.utils.set_random_seed(0)
        teacher = tfc.reference.reference_mobilenet_v2((96, 96, 3), 6)
        calib = np.random.default_rng(0).uniform(0, 1, (32, 96, 96, 3)).astype("float32")
        rows = []
        for ratio in (0.5, 0.6, 0.7, 0.8, 0.9):
            for round_to in (8, 16):
                student = make_student(teacher, ratio, round_to=round_to)
                row = {"ratio": ratio, "round_to": round_to,
                       "params": int(student.count_params()),
                       **{t: on_npu(student, calib, t, work) for t in TARGETS}}
                rows.append(row)
                print("mobilenetv2", ratio, round_to,
                      {t: round(row[t]["inference_ms"], 4) for t in TARGETS}, flush=True)
        result["rounding"] = rows
    (HERE / "npu_results.json").write_text(json.dumps(result, indent=1) + "\n")
    (HERE / "npu_results.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    lines = ["# What an Ethos-U NPU makes of compression (Vela's estimates)", "",
             f"Written by `python models/npu/measure_npu.py` (Vela {result['vela_version']}, "
             f"TF {result['tensorflow']}); every figure is Vela's, with its default system "
             "configuration and memory mode for each accelerator.", "",
             "## Unstructured sparsity", "",
             "Each layer's smallest weights set to zero, then post-training int8. Ratios are "
             "against the dense file on the same configuration.", "",
             "| network | zeros | " + " | ".join(
                 f"{t}: est. ms | {t}: flash KiB | {t}: compiled KB" for t in TARGETS) + " |",
             "|---|---|" + "---|---|---|" * len(TARGETS)]
    for name, rows in result["sparsity"].items():
        dense = rows[0]
        for row in rows:
            cells = []
            for t in TARGETS:
                r, d = row[t], dense[t]
                flash = (f"{r['flash_bytes'] / 1024:.1f} "
                         f"({d['flash_bytes'] / r['flash_bytes']:.2f}x)") if r["flash_bytes"] \
                    else "none (weights in DRAM)"
                cells += [f"{r['inference_ms']:.4f} ({d['inference_ms'] / r['inference_ms']:.2f}x)",
                          flash,
                          f"{r['model_bytes'] / 1000:.1f} "
                          f"({d['model_bytes'] / r['model_bytes']:.2f}x)"]
            lines.append(f"| {name} | {100 * row['sparsity']:.0f} % | " + " | ".join(cells)
                         + " |")
    lines += ["", "## Channel counts", "",
              "A plain 32x32 CNN with C channels (see the script): Vela's time per million "
              "MACs; a count off the NPU's preferred multiple costs more per MAC.", "",
              "| C | MACs | " + " | ".join(f"{t}: est. ms | {t}: ms per M MACs" for t in TARGETS)
              + " |", "|---|---|" + "---|---|" * len(TARGETS)]
    for c, row in result["channels"].items():
        cells = []
        for t in TARGETS:
            r = row[t]
            cells += [f"{r['inference_ms']:.4f}",
                      f"{r['inference_ms'] / (r['macs'] / 1e6):.4f}"]
        lines.append(f"| {c} | {row[TARGETS[0]]['macs']:,} | " + " | ".join(cells) + " |")
    lines += ["", "## Rounding on a whole network", "",
              "The reference MobileNetV2 (0.35, 96x96) thinned uniformly, channels at multiples "
              "of 8 or 16.", "",
              "| channels removed | multiple | params | " + " | ".join(
                  f"{t}: est. ms" for t in TARGETS) + " |", "|---|---|---|" + "---|" * len(TARGETS)]
    for row in result.get("rounding", []):
        lines.append(f"| {row['ratio']:.1f} | {row['round_to']} | {row['params']:,} | "
                     + " | ".join(f"{row[t]['inference_ms']:.3f}" for t in TARGETS) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
