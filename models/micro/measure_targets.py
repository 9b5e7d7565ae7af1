"""Where a model runs: TFLite Micro against Keras, XNNPACK against LiteRT's reference kernels,
and what a microcontroller needs (arena, flash, ops), for four reference networks.

    python models/micro/measure_targets.py [--fast]

Each network is trained in float, fine-tuned with quantization-aware training and exported
for TFLite Micro (`to_tflite(..., target="tflm")`: batch 1, integer I/O, C++ sources). On the
test images it measures the top-1 agreement between the QAT Keras model and TFLite Micro, and
between LiteRT's XNNPACK path and its reference kernels (the same file). The reference CNN is
also taken through the demo's `default` recipe, whose final model is the one the mnist card
reports. Writes `targets.json` and `targets.md` beside this script.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import _tflite
from tfcompress.data import Dataset, split
from tfcompress.export import to_tflite
from tfcompress.quantization import count_params, quantize_aware

HERE = Path(__file__).parent


def keywords(n: int = 4000, seed: int = 0) -> Dataset:
    """A stand-in for Speech Commands' MFCCs (49 frames x 10 features, 12 keywords): each
    keyword is a pattern of two bands at its own features and time, shifted and noisy."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 12, n).astype(np.int32)
    t = np.arange(49)[:, None]
    f = np.arange(10)[None, :]
    x = rng.normal(0, 0.2, (n, 49, 10)).astype(np.float32)
    for i, k in enumerate(y):
        start = 8 + 2 * (k % 6) + rng.integers(-3, 4)
        band = k // 6 * 4 + (k % 3)
        x[i] += np.exp(-((t - start) ** 2) / 18 - ((f - band) ** 2) / 2)
        x[i] += 0.8 * np.exp(-((t - start - 12) ** 2) / 18 - ((f - (9 - band)) ** 2) / 2)
    x = (x - x.min()) / (x.max() - x.min())
    parts = split(x[..., None], y, 0.2, seed)
    return Dataset(*parts, name="keywords (synthetic)")


def networks(fast: bool) -> list[tuple[str, keras.Model, Dataset, dict]]:
    """(name, model, data, training: epochs, learning rate, batch size). MobileNetV2 trains
    as its model card does (`models/make_card.py`)."""
    shapes96 = tfc.data.load("shapes", image_size=96, num_samples=1500 if fast else 3000)
    shapes32 = tfc.data.load("shapes", image_size=32, num_samples=1500 if fast else 6000)

    def fit(epochs, lr=1e-3, batch=64):
        return {"epochs": 1 if fast else epochs, "learning_rate": lr, "batch_size": batch}

    return [
        ("reference CNN (mnist, 28x28x1)", tfc.reference.reference_cnn(), tfc.data.load("mnist"),
         fit(5)),
        ("MobileNetV2 0.35 (shapes, 96x96x3)", tfc.reference.reference_mobilenet_v2(),
         shapes96, fit(15, 3e-3, 32)),
        ("ResNet-8 (shapes, 32x32x3)", tfc.reference.reference_resnet8(num_classes=6),
         shapes32, fit(10)),
        ("DS-CNN (keywords, 49x10x1)", tfc.reference.reference_ds_cnn(), keywords(),
         fit(30)),
    ]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


def measure(name: str, model: keras.Model, ds: Dataset, training: dict, out: Path) -> dict:
    print(f"{name}: training {training['epochs']} epoch(s) + 1 QAT epoch", flush=True)
    keras.utils.set_random_seed(0)
    tfc.reference.compile_for_classification(model, training["learning_rate"])
    model.fit(ds.x_train, ds.y_train, epochs=training["epochs"],
              batch_size=training["batch_size"], verbose=0)
    q = quantize_aware(model)
    q.compile(keras.optimizers.Adam(1e-4), model.loss, metrics=["accuracy"])
    q.fit(ds.x_train, ds.y_train, epochs=1, batch_size=training["batch_size"], verbose=0)
    return measure_qat(name, model, q, ds, out)


def measure_qat(name: str, model: keras.Model, q: keras.Model, ds: Dataset, out: Path) -> dict:
    stem = out / name.split(" ")[0].lower().replace("-", "")
    micro = to_tflite(q, f"{stem}_tflm.tflite", "int8", target="tflm",
                      class_names=ds.class_names)
    lite = to_tflite(q, f"{stem}.tflite", "int8")
    x, y = ds.x_test, ds.y_test
    keras_out = q.predict(x, batch_size=128, verbose=0)
    tflm_out = _tflite.run(_tflite.interpreter(micro.path, target="tflm"), x)
    xnn = _tflite.run(_tflite.interpreter(lite.path, target="litert"), x)
    ref = _tflite.run(_tflite.interpreter(lite.path, target="litert-reference"), x)
    row = {
        "model": name, "test_images": len(x), "params": count_params(q),
        "float_accuracy": float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)),
        "qat_accuracy": float(np.mean(np.argmax(keras_out, -1) == y)),
        "tflm_accuracy": float(np.mean(np.argmax(tflm_out, -1) == y)),
        "tflm_vs_keras": agreement(tflm_out, keras_out),
        "xnnpack_vs_reference": agreement(xnn, ref),
        "xnnpack_accuracy": float(np.mean(np.argmax(xnn, -1) == y)),
        "reference_accuracy": float(np.mean(np.argmax(ref, -1) == y)),
        "tflm_vs_reference_max_steps": float(np.max(np.abs(
            _tflite.run(_tflite.interpreter(micro.path, target="litert-reference"), x)
            - tflm_out)) / micro.outputs[0].scale),
        "micro": micro.micro.to_dict(),
    }
    print(f"  TFLM vs Keras {100 * row['tflm_vs_keras']:.2f} %, XNNPACK vs reference "
          f"{100 * row['xnnpack_vs_reference']:.2f} %, arena {micro.micro.arena_bytes:,} B, "
          f"flash {micro.micro.model_flash_bytes:,} B", flush=True)
    return row


def demo_model(out: Path, fast: bool) -> dict:
    """The reference CNN through the demo's `default` recipe: its final QAT model on TFLM."""
    ds, val = tfc.data.load("mnist").hold_out()
    keras.utils.set_random_seed(0)
    model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
    model.fit(ds.x_train, ds.y_train, epochs=1 if fast else 5, batch_size=64, verbose=0)
    result = tfc.compress(model, ds, "default", out / "demo", val=val, runs=20,
                          progress=lambda s: print(" ", s, flush=True))
    q = keras.saving.load_model(result.steps[-2].model_path)  # the qat step's model
    return measure_qat("demo model (mnist, default recipe)", model, q, ds, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="one epoch each, for a smoke run")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite targets.md from targets.json without measuring")
    args = parser.parse_args()
    if args.report_only:
        (HERE / "targets.md").write_text(markdown(json.loads((HERE / "targets.json")
                                                             .read_text())))
        return
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = [measure(n, m, d, t, out) for n, m, d, t in networks(args.fast)]
        rows.append(demo_model(out, args.fast))
    machine = (f"{platform.machine()}, {platform.python_version()}; TensorFlow "
               f"{_version('tensorflow')}, Keras {keras.__version__}, ai-edge-litert "
               f"{_version('ai-edge-litert')}, tflite-micro {_version('tflite-micro')}")
    result = {"machine": machine, "fast": args.fast, "seconds": round(time.time() - start),
              "rows": rows}
    (HERE / "targets.json").write_text(json.dumps(result, indent=2))
    (HERE / "targets.md").write_text(markdown(result))
    print(markdown(result))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def markdown(result: dict) -> str:
    lines = [
        "# Where the int8 models run: TFLite Micro, LiteRT reference kernels, XNNPACK",
        "",
        f"`python models/micro/measure_targets.py` ({result['machine']}). Top-1 agreement "
        "on every test image; arena as TFLite Micro's recording allocator measures it, and "
        "with the headroom tfcompress writes into the header (+10 % + 1 KiB).",
        "",
        "| model | params | TFLM vs Keras (QAT) | XNNPACK vs reference kernels | accuracy: Keras "
        "QAT / TFLM / XNNPACK | arena measured (B) | arena in header (B) | model flash (B) | "
        "ops |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m = r["micro"]
        lines.append(
            f"| {r['model']}, {r['test_images']:,} test images | {r['params']:,} | "
            f"{100 * r['tflm_vs_keras']:.2f} % | "
            f"{100 * r['xnnpack_vs_reference']:.2f} % | {100 * r['qat_accuracy']:.2f} / "
            f"{100 * r['tflm_accuracy']:.2f} / {100 * r['xnnpack_accuracy']:.2f} % | "
            f"{m['arena_bytes_measured']:,} | {m['arena_bytes']:,} | "
            f"{m['model_flash_bytes']:,} | {', '.join(m['ops'])} |")
    lines += ["", "TFLite Micro and LiteRT's reference kernels differ by at most "
              f"{max(r['tflm_vs_reference_max_steps'] for r in result['rows']):.0f} output "
              "quantization step(s) on these images.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
