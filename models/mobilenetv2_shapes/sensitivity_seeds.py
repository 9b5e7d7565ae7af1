"""Sensitivity-driven ratios against one ratio for all on MobileNetV2, over 3 seeds.

A smaller setting than the card, so that three seeds fit in half an hour: MobileNetV2
(alpha 0.35) on `shapes` at 96 x 96, 2,000 images (10 % held out for the scans), trained per
seed until its validation accuracy stops improving. From each trained model, with the same
schedule (`tfcompress.pruning.prune`, 3 epochs):
- 80 % unstructured sparsity: every kernel at 80 %, the default selection at 80 % each, or
  every kernel at `scan.sparsities(0.8)` from a prune scan (80 % overall, like the first);
- 50 % of channels removed and `shrink`: one ratio for all groups, or each group's ratio from
  a channels scan (`scan.sparsities(0.5, by="macs")`: half of the MACs the groups carry).
Test accuracy on the 400 test images (LiteRT not involved: the comparison is of training).

    python models/mobilenetv2_shapes/sensitivity_seeds.py   # -> sensitivity_seeds.{json,md}
"""

import json
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
    from tfcompress._macs import model_macs
    from tfcompress.debug import sensitivity

    rows = []
    for seed in range(seeds):
        full, train, val, model, epochs = _shared.trained_mobilenet_v2(seed)
        row = {"seed": seed, "epochs": epochs,
               "dense": tfc._training.accuracy(model, full.x_test, full.y_test)}
        prune_scan = sensitivity(model, val, "prune", 0.8, num_samples=len(val[0]))
        channel_scan = sensitivity(model, val, "channels", 0.5, num_samples=len(val[0]))
        every_kernel = [keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense]
        runs = {
            "unstructured_uniform": {"sparsity": 0.8, "layers": every_kernel},
            "unstructured_default": {"sparsity": 0.8},
            "unstructured_sensitivity": {"sparsity": 0.8,
                                         "layer_sparsity": prune_scan.sparsities(0.8)},
            "channels_uniform": {"sparsity": 0.5, "granularity": "channel",
                                 "shrink": True},
            "channels_sensitivity": {"sparsity": 0.5, "granularity": "channel",
                                     "shrink": True,
                                     "layer_sparsity": channel_scan.sparsities(0.5, by="macs")},
        }
        for name, kwargs in runs.items():
            keras.utils.set_random_seed(seed)
            pruned, result = P.prune(model, train, epochs=3, batch_size=32, **kwargs)
            row[name] = {"accuracy": tfc._training.accuracy(pruned, full.x_test, full.y_test),
                         "params": int(pruned.count_params()),
                         "macs": model_macs(pruned),
                         "sparsity_all_kernels": P.sparsity_report(pruned).sparsity}
        rows.append(row)
        print(seed, json.dumps({k: v for k, v in row.items()}), flush=True)
    names = [k for k in rows[0] if k not in ("seed", "epochs", "dense")]
    summary = {"dense": statistics.mean(r["dense"] for r in rows)}
    for name in names:
        summary[name] = {key: statistics.mean(r[name][key] for r in rows)
                         for key in ("accuracy", "params", "macs", "sparsity_all_kernels")}
    return {"summary": summary, "seeds": rows}


def markdown(out: dict) -> str:
    s = out["summary"]
    lines = [
        "# MobileNetV2: sensitivity-driven ratios vs one ratio for all (3 seeds)",
        "",
        "Produced by `python models/mobilenetv2_shapes/sensitivity_seeds.py` (MobileNetV2 "
        "alpha 0.35, `shapes` 96 x 96, 1,440 training and 160 held-out images per seed, "
        "trained until the held-out accuracy stopped improving: "
        f"{', '.join(str(r['epochs']) for r in out['seeds'])} epochs; each pruning fine-tunes "
        "3 epochs from the trained model). Means over "
        f"{len(out['seeds'])} seeds; test accuracy on 400 images.",
        "",
        "| | test accuracy | vs dense (points) | parameters | MACs | sparsity over all "
        "kernels |",
        "|---|---|---|---|---|---|",
        f"| dense | {100 * s['dense']:.2f} % | | | | 0 |",
    ]
    labels = {"unstructured_uniform": "80 % unstructured, every kernel at 80 %",
              "unstructured_default": "80 % unstructured, default selection (depthwise and "
                                      "small kernels dense)",
              "unstructured_sensitivity": "80 % unstructured, per layer from a prune scan",
              "channels_uniform": "50 % of channels, one ratio, shrunk",
              "channels_sensitivity": "50 % of channels (share of MACs), per group from a "
                                      "channels scan, shrunk"}
    for name, label in labels.items():
        r = s[name]
        lines.append(f"| {label} | {100 * r['accuracy']:.2f} % | "
                     f"{100 * (r['accuracy'] - s['dense']):+.2f} | {r['params']:,.0f} | "
                     f"{r['macs']:,.0f} | {r['sparsity_all_kernels']:.3f} |")
    lines += ["", "The dense model is trained to convergence, so the pruned rows' 3 more epochs "
              "do not pass for recovered accuracy."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _shared.write_results(HERE, "sensitivity_seeds", main(), markdown)
