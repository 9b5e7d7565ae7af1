"""Sensitivity-driven per-layer sparsity against one sparsity for all, and QAT with the
layers a quantize scan picks kept in float against QAT of every layer, on the reference CNN.

For each seed: train the CNN on 3,600 digits until its accuracy on 400 held-out digits stops
improving (`_shared.fit_converged`), scan every prunable kernel on those held-out digits
(`tfcompress.debug.sensitivity(..., "prune")`), then prune a copy of it to an overall 80 % in
two ways with the same 2-epoch schedule (`tfcompress.pruning.prune`):
- uniform: the default selection (depthwise and kernels under 1,024 weights dense), 80 % each;
- sensitivity: every kernel, at the sparsities `scan.sparsities(0.8)` gives (80 % overall).
Then QAT for one epoch from the trained model, either of every layer or with
`float_layers="auto"` (a quantize scan on the held-out digits, 1-point budget), exported to
int8 and scored in LiteRT. Accuracy is measured on the 1,000 test digits, which neither the
scans nor training saw.

    python models/mnist_cnn/sensitivity_sparsity.py     # writes sensitivity_results.{json,md}
"""

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for _shared
import _shared  # noqa: E402

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(seeds: int = 3) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress import pruning as P
    from tfcompress.debug import sensitivity

    full = tfc.data.load("mnist")
    train, (x_val, y_val) = full.hold_out(0.1)
    rows = []
    for seed in range(seeds):
        keras.utils.set_random_seed(seed)
        model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
        epochs = _shared.fit_converged(model, (train.x_train, train.y_train), (x_val, y_val),
                                       keras.callbacks)
        dense = tfc._training.accuracy(model, full.x_test, full.y_test)
        scan = sensitivity(model, (x_val, y_val), "prune", 0.8, num_samples=400)
        layer_sparsity = scan.sparsities(0.8)
        result = {"seed": seed, "epochs": epochs, "dense": dense, "layer_sparsity": layer_sparsity,
                  "scan": scan.to_dict()}
        for name, kwargs in (("uniform", {}), ("sensitivity", {"layer_sparsity": layer_sparsity})):
            keras.utils.set_random_seed(seed)
            pruned, res = P.prune(model, train, sparsity=0.8, epochs=2, **kwargs)
            every = P.sparsity_report(pruned)  # all prunable kernels
            result[name] = {"accuracy": tfc._training.accuracy(pruned, full.x_test,
                                                               full.y_test),
                            "sparsity_all_kernels": every.sparsity}
        from tfcompress.export import to_tflite
        from tfcompress.quantization import train_quantized

        qscan = sensitivity(model, (x_val, y_val), "quantize", num_samples=400)
        for name, kwargs in (("qat_uniform", {}),
                             ("qat_auto", {"float_layers": "auto", "sensitivity": qscan})):
            keras.utils.set_random_seed(seed)
            q, _ = train_quantized(model, train, epochs=1, **kwargs)
            path = f"/tmp/sensitivity_{name}_{seed}.tflite"
            report = to_tflite(q, path, "int8", representative_data=train)
            result[name] = {"accuracy": tfc.bench.benchmark(path, full, runs=1).accuracy,
                            "float_ops": [o.op for o in report.float_ops],
                            "float_layers": qscan.float_layers() if kwargs else []}
        rows.append(result)
        print(seed, {k: result[k] for k in ("dense", "uniform", "sensitivity", "qat_uniform",
                                            "qat_auto")}, flush=True)
    summary = {
        "dense": statistics.mean(r["dense"] for r in rows),
        **{name: {"accuracy": statistics.mean(r[name]["accuracy"] for r in rows),
                  "sparsity_all_kernels": statistics.mean(r[name]["sparsity_all_kernels"]
                                                          for r in rows)}
           for name in ("uniform", "sensitivity")},
        **{name: {"accuracy": statistics.mean(r[name]["accuracy"] for r in rows),
                  "float_layers": [r[name]["float_layers"] for r in rows]}
           for name in ("qat_uniform", "qat_auto")},
    }
    return {"summary": summary, "seeds": rows, "keras": keras.__version__}


def markdown(out: dict) -> str:
    s = out["summary"]
    lines = [
        "# Sensitivity-driven sparsity vs one sparsity for all (reference CNN, mnist)",
        "",
        "Produced by `python models/mnist_cnn/sensitivity_sparsity.py`. Per seed: the CNN "
        "trained on 3,600 digits until its accuracy on 400 held-out digits stopped improving ("
        f"{', '.join(str(r['epochs']) for r in out['seeds'])} epochs); a prune scan at 80 % "
        "on those held-out digits; "
        "then `prune(..., sparsity=0.8, epochs=2)` from the same trained model, either with "
        "the default selection or with `layer_sparsity=scan.sparsities(0.8)`. Test accuracy on "
        f"1,000 unseen digits, mean over {len(out['seeds'])} seeds.",
        "",
        "| | test accuracy | vs dense (points) | sparsity over all kernels |",
        "|---|---|---|---|",
        f"| dense | {100 * s['dense']:.2f} % | | 0 |",
    ]
    for name, label in (("uniform", "uniform 80 % (default selection)"),
                        ("sensitivity", "sensitivity-driven, 80 % overall")):
        lines.append(f"| {label} | {100 * s[name]['accuracy']:.2f} % | "
                     f"{100 * (s[name]['accuracy'] - s['dense']):+.2f} | "
                     f"{s[name]['sparsity_all_kernels']:.3f} |")
    lines += ["", "| QAT, 1 epoch, int8 in LiteRT | test accuracy | layers kept in float per "
              "seed |", "|---|---|---|"]
    for name, label in (("qat_uniform", "every layer quantized"),
                        ("qat_auto", 'float_layers="auto" (1-point budget)')):
        kept = "; ".join(", ".join(f) or "none" for f in s[name]["float_layers"])
        lines.append(f"| {label} | {100 * s[name]['accuracy']:.2f} % | {kept} |")
    lines += ["", "Per-layer sparsities of seed 0: " + ", ".join(
        f"{k} {v:.2f}" for k, v in out["seeds"][0]["layer_sparsity"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    _shared.write_results(HERE, "sensitivity_results", main(), markdown)
