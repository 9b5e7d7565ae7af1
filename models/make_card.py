"""Model cards: train a reference model, run its folder's recipe through the pipeline, and
write the pipeline's report (table, JSON, plot) into the folder.

    python models/make_card.py --model cnn          # -> models/mnist_cnn/card/
    python models/make_card.py --model mobilenetv2  # -> models/mobilenetv2_shapes/card/
    python models/make_card.py --model mobilenetv2 --recipe recipe_sensitivity.yaml \
        --card card_sensitivity                     # another recipe, another card folder
    python models/make_card.py --model detector     # -> models/detection_shapes/card/

The trained models and .tflite files go to a temporary folder (printed); only the reports are
kept in the repository.
"""

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CARDS = {
    "cnn": {"folder": "mnist_cnn", "data": "mnist", "learning_rate": 1e-3, "batch_size": 64},
    "mobilenetv2": {"folder": "mobilenetv2_shapes", "data": "shapes", "learning_rate": 3e-3,
                    "batch_size": 32, "image_size": 96, "num_samples": 3000},
    "detector": {"folder": "detection_shapes", "data": "shapes-detect", "learning_rate": 2e-3,
                 "batch_size": 32, "image_size": 96, "num_samples": 3000},
}
# The baseline trains until its score on the validation images stops improving (the best
# weights kept): a budget against an undertrained baseline would let fine-tuning's extra
# epochs pass for recovered accuracy.
MAX_EPOCHS, PATIENCE, FIRST_CHECK = 80, 6, 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CARDS), default="cnn")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="recipe.yaml",
                        help="Recipe file in the model's folder.")
    parser.add_argument("--card", default="card", help="Card folder in the model's folder.")
    parser.add_argument("--work", help="Folder for the run's models and files (default: a new "
                        "temporary one). A folder of a stopped run resumes it, from its "
                        "trained baseline.")
    args = parser.parse_args()
    cfg = CARDS[args.model]

    import keras

    import tfcompress as tfc
    from tfcompress.reference import (
        compile_for_classification,
        compile_for_detection,
        reference_cnn,
        reference_detector,
        reference_mobilenet_v2,
    )

    extra = {k: cfg[k] for k in ("image_size", "num_samples") if k in cfg}
    # Validation images for the recipe's searches are held out of the reference model's training.
    ds, val = tfc.data.load(cfg["data"], seed=args.seed, **extra).hold_out(seed=args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix=f"tfc-card-{args.model}-"))
    if (work / "00_baseline.keras").exists():  # a stopped run: the same baseline resumes it
        model = keras.saving.load_model(work / "00_baseline.keras")
    else:
        keras.utils.set_random_seed(args.seed)
        if args.model == "detector":
            model = compile_for_detection(reference_detector(ds.input_shape, ds.num_classes),
                                          cfg["learning_rate"])
        else:
            build = reference_cnn if args.model == "cnn" else reference_mobilenet_v2
            model = compile_for_classification(build(ds.input_shape, ds.num_classes),
                                               cfg["learning_rate"])
        watch = "val_loss" if args.model == "detector" else "val_accuracy"
        stop = keras.callbacks.EarlyStopping(
            monitor=watch, mode="min" if watch == "val_loss" else "max", patience=PATIENCE,
            restore_best_weights=True, start_from_epoch=FIRST_CHECK)
        history = model.fit(ds.x_train, ds.y_train, validation_data=val, epochs=MAX_EPOCHS,
                            batch_size=cfg["batch_size"], callbacks=[stop], verbose=2)
        print(f"baseline: {len(history.history['loss'])} epochs, best {watch} "
              f"{stop.best:.4f}", flush=True)
    folder = HERE / cfg["folder"]
    print("models and .tflite files in", work, flush=True)
    result = tfc.compress(model, ds, folder / args.recipe, work, val=val,
                 max_accuracy_drop=args.max_accuracy_drop, seed=args.seed, runs=args.runs,
                 batch_size=cfg["batch_size"], progress=lambda s: print(s, flush=True))
    card = folder / args.card
    card.mkdir(exist_ok=True)
    for name in ("report.json", "report.png"):
        shutil.copy(work / name, card / name)
    detector = args.model == "detector"
    (card / "report.md").write_text(
        (work / "report.md").read_text()
        + (_detection_section(result, model, ds) if detector else _micro_section(result, ds))
        + _npu_section(result, model, ds) + _tfmot_section(folder))
    (card / "machine.txt").write_text(
        f"{platform.machine()}, {os.cpu_count()} cores, {_vector_units()}; TensorFlow "
        f"{__import__('tensorflow').__version__}, Keras {keras.__version__}\n"
        f"python models/make_card.py --model {args.model} --max-accuracy-drop "
        f"{args.max_accuracy_drop} --runs {args.runs} --seed {args.seed} --recipe "
        f"{args.recipe} --card {args.card}\n")
    print((card / "report.md").read_text())


def _vector_units() -> str:
    """Which SIMD extensions XNNPACK can use here (int8 vs float32 speed depends on them)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "CPU flags unknown"
    found = [n for n, f in (("AVX2", "avx2"), ("AVX-512", "avx512f"),
                            ("AVX-512 VNNI", "avx512_vnni")) if f in flags]
    return ", ".join(found) or "no AVX2"


def _micro_section(result, ds) -> str:
    """The final quantization-aware model exported for TFLite Micro: agreement, arena, flash."""
    import keras

    from tfcompress.export import to_tflite

    qat = next((s for s in reversed(result.steps) if s.step == "qat"), None)
    if qat is None:
        return ""
    model = keras.saving.load_model(qat.model_path)
    path = Path(result.out_dir) / "micro" / "model.tflite"
    # the training images calibrate the file where the pipeline skipped QAT (post-training int8)
    report = to_tflite(model, path, "int8", ds, verify_data=(ds.x_test, ds.y_test), target="tflm")
    m = report.micro
    return "\n".join([
        "", "## On a microcontroller", "",
        f"The final model exported with `to_tflite(..., target=\"tflm\")` (batch 1, int8 input "
        f"and output): top-1 agreement with the Keras model in TFLite Micro "
        f"{100 * report.agreement:.2f} % of {report.agreement_samples} test images; tensor "
        f"arena {m.arena_bytes_measured:,} bytes measured ({m.arena_bytes:,} with headroom), "
        f"model {m.model_flash_bytes:,} bytes of flash; ops {', '.join(m.ops)}.", ""])


def _detection_section(result, baseline, ds) -> str:
    """The final detector exported with its post-processing in the file: mAP of the file's own
    detections on LiteRT and its reference kernels, and TFLite Micro's arena and flash, with
    the share of test images where TFLite Micro finds what the reference kernels find."""
    import keras
    import numpy as np

    from tfcompress import _tflite
    from tfcompress.bench import benchmark, time_side_by_side
    from tfcompress.detection import file_detections, same_detections
    from tfcompress.export import to_tflite

    final = result.steps[-1]
    model = keras.saving.load_model(final.model_path)
    folder = Path(result.out_dir) / "postprocess"
    rows, micro = [], None
    for target in ("litert", "tflm"):
        report = to_tflite(model, folder / f"{target}.tflite", "int8", ds, target=target,
                           detection_postprocess=True, verify_data=(ds.x_test, ds.y_test))
        micro = report.micro or micro
    path = folder / "litert.tflite"
    for target in ("litert", "litert-reference"):
        scores = [benchmark(path, (ds.x_test, ds.y_test), runs=1, target=target,
                            metric=m).accuracy for m in ("map50", "map")]
        rows.append(f"| {target} | {100 * scores[0]:.2f} | {100 * scores[1]:.2f} |")
    content = (folder / "tflm.tflite").read_bytes()
    on_micro = file_detections(_tflite.interpreter(content, target="tflm"), ds.x_test)
    on_ref = file_detections(_tflite.interpreter(content, target="litert-reference"), ds.x_test)
    same = np.mean([same_detections(a, b) for a, b in zip(on_micro, on_ref, strict=True)])
    base = Path(result.baseline.tflite_path)
    # the baseline with the same post-processing in its file: both files then end in detections
    base_post = folder / "baseline_float32.tflite"
    to_tflite(baseline, base_post, "float32", detection_postprocess=True)
    times = time_side_by_side([base, base_post, path], (ds.x_test, ds.y_test), runs=200)
    p50 = [float(np.percentile(t, 50)) for t in times]
    sizes = [f.stat().st_size for f in (base, base_post, path)]
    return "\n".join([
        "", "## With its post-processing in the file", "",
        "The final model exported with `to_tflite(..., detection_postprocess=True)` "
        "(TFLite_Detection_PostProcess: score 0.05, IoU 0.5, 100 detections), scored by its own "
        f"detections on the {len(ds.x_test)} test images:", "",
        "| runtime | mAP@0.5 (%) | mAP@0.5:0.95 (%) |", "|---|---|---|", *rows, "",
        f"Against the float32 baseline ({100 * result.baseline.accuracy:.2f} % mAP@0.5), the "
        "three files timed side by side (LiteRT p50, 1 thread):", "",
        "| file | bytes | p50 (ms) | final int8 file with post-processing |",
        "|---|---|---|---|",
        f"| float32 baseline with the same post-processing in the file | {sizes[1]:,} | "
        f"{p50[1]:.4f} | **{sizes[1] / sizes[2]:.2f}x smaller, {p50[1] / p50[2]:.2f}x "
        "faster** |",
        f"| float32 baseline, raw outputs (decoded outside the file) | {sizes[0]:,} | "
        f"{p50[0]:.4f} | {sizes[0] / sizes[2]:.2f}x smaller, {p50[0] / p50[2]:.2f}x faster |",
        f"| final int8, post-processing in the file | {sizes[2]:,} | {p50[2]:.4f} | |",
        "",
        f"TFLite Micro: model {micro.model_flash_bytes:,} bytes of flash, arena "
        f"{micro.arena_bytes_measured:,} bytes measured; the same detections as LiteRT's "
        f"reference kernels on {100 * same:.2f} % of the test images.", ""])


NPU_TARGETS = ("ethos-u55-128", "ethos-u85-256")


def _npu_section(result, model, ds) -> str:
    """The trained model's dense int8 file (post-training, calibrated on the training images)
    against the final file, compiled by Vela for two Ethos-U configurations (the `npu` extra;
    none without it)."""
    import keras

    from tfcompress import _vela
    from tfcompress.export import to_tflite

    final = result.steps[-1] if result.steps else None
    if not _vela.installed() or final is None:
        return ""
    last = keras.saving.load_model(final.model_path)
    rows, folder = [], Path(result.out_dir) / "npu"
    for target in NPU_TARGETS:
        pair = []
        for name, m, data in (("dense int8", model, ds), ("final", last, ds)):
            report = to_tflite(m, folder / f"{name.replace(' ', '_')}_{target}.tflite", "int8",
                               data, target=target, allow_cpu_ops=True,
                               verify_data=(ds.x_test, ds.y_test)).npu
            pair.append(report)
        base = pair[0]
        for name, r in zip(("dense int8 of the trained model", "final"), pair, strict=True):
            rows.append(
                f"| {target} | {name} | {len(r.ops) - len(r.cpu_ops)} of {len(r.ops)} | "
                f"{r.inference_ms:.3f} | {base.inference_ms / r.inference_ms:.2f}x | "
                f"{r.sram_bytes / 1024:.1f} | {r.flash_bytes / 1024:.1f} | {r.model_bytes:,} |")
    return "\n".join([
        "", "## On an Arm Ethos-U NPU", "",
        f"Both files compiled by Vela {base.vela_version} with its default system "
        "configuration and memory mode for each accelerator (`to_tflite(..., target=...)`; the "
        "dense file is post-training int8 of the trained model, calibrated on its training "
        "images). Times are Vela's estimates per inference.", "",
        "| NPU | file | ops on the NPU | est. ms | faster | SRAM KiB | flash KiB | compiled "
        "bytes |", "|---|---|---|---|---|---|---|---|", *rows, ""])


def _tfmot_section(folder: Path) -> str:
    """The side-by-side tfmot figures of the folder's pruning and QAT comparisons, if any
    (those scripts run tfmot in its own process; the card quotes their saved results)."""
    import json

    prune, qat = folder / "pruning_results.json", folder / "qat_results.json"
    if not (prune.is_file() and qat.is_file()):
        return ""
    p, q = json.loads(prune.read_text()), json.loads(qat.read_text())
    ours, ref = p["tfcompress"], p["tfmot"]
    rows = [
        ("80 % pruning, accuracy drop vs dense, each engine's default (points)",
         100 * (ours["accuracy_pruned"]["default"] - ours["accuracy_dense"]),
         100 * (ref["accuracy_pruned"] - ref["accuracy_dense"]), "{:+.2f}"),
        ("fit time with pruning / plain fit time", ours["overhead_ratio"],
         ref["overhead_ratio"], "{:.3f}"),
        ("QAT: top-1 agreement, Keras model vs its int8 TFLite (%)",
         100 * q["tfcompress"]["qat_agreement"], 100 * q["tfmot"]["qat_agreement"], "{:.2f}"),
        ("QAT int8 accuracy in LiteRT (%)", 100 * q["tfcompress"]["qat_int8_accuracy"],
         100 * q["tfmot"]["qat_int8_accuracy"], "{:.2f}"),
        ("QAT epoch time / float epoch time", q["tfcompress"]["qat_epoch_ratio"],
         q["tfmot"]["qat_epoch_ratio"], "{:.2f}"),
    ]
    lines = ["", "## Side by side with tfmot", "",
             f"From `compare_pruning.py` and `compare_qat.py` in this folder ({ref['engine']} "
             "in its own process, same model and data; pruning figures are means over 3 seeds).",
             "", "| | tfcompress | tfmot |", "|---|---|---|"]
    lines += [f"| {name} | {fmt.format(a)} | {fmt.format(b)} |" for name, a, b, fmt in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
