"""Channel pruning + shrink against unstructured pruning, measured in LiteRT in one run.

For one reference model (the `mnist` CNN, or MobileNetV2(alpha=0.35) on `shapes` at 96x96):
1. train the dense model until its accuracy on validation images held out of the training
   part stops improving (best weights kept);
2. one-shot channel mask (no training) + shrink: outputs compared with the masked model, and
   accuracy before any fine-tuning;
3. channel pruning while fine-tuning (`prune(..., granularity="channel", shrink=True)`),
   then more fine-tuning of the shrunk model;
4. unstructured pruning to 50 % with the same fine-tuning budget (the contrast);
5. every model exported to int8 (and the dense one to float32) and timed side by side in
   LiteRT, 1 thread.

    python models/compare_channels.py --model cnn          # -> models/mnist_cnn/channel_*
    python models/compare_channels.py --model mobilenetv2  # -> models/mobilenetv2_shapes/...
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SETTINGS = {
    "cnn": {"data": "mnist", "folder": "mnist_cnn", "sparsity": 0.5,
            "prune_epochs": 4, "finetune_epochs": 2, "learning_rate": 1e-3, "batch_size": 64,
            "round_to": 8},
    "mobilenetv2": {"data": "shapes", "folder": "mobilenetv2_shapes",
                    "sparsity": 0.4, "prune_epochs": 4, "finetune_epochs": 2,
                    "learning_rate": 3e-3, "batch_size": 32, "image_size": 96,
                    "num_samples": 3000, "round_to": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SETTINGS), default="cnn")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = SETTINGS[args.model]

    import keras
    import numpy as np
    from _shared import fit_converged

    import tfcompress as tfc
    from tfcompress import _training
    from tfcompress.bench import benchmark
    from tfcompress.export import to_tflite
    from tfcompress.pruning import ConstantSparsity, Pruning, prune, shrink
    from tfcompress.reference import (
        compile_for_classification,
        reference_cnn,
        reference_mobilenet_v2,
    )

    extra = {k: cfg[k] for k in ("image_size", "num_samples") if k in cfg}
    ds, val = tfc.data.load(cfg["data"], seed=args.seed, **extra).hold_out(0.15, args.seed)
    keras.utils.set_random_seed(args.seed)
    build = reference_cnn if args.model == "cnn" else reference_mobilenet_v2
    dense = compile_for_classification(build(ds.input_shape, ds.num_classes),
                                       cfg["learning_rate"])
    bs = cfg["batch_size"]
    dense_epochs = fit_converged(dense, (ds.x_train, ds.y_train), val, keras.callbacks,
                                 batch_size=bs)
    acc = _training.accuracy
    out: dict = {"model": args.model, "data": str(ds), "settings": cfg,
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "versions": {"tensorflow": __import__("tensorflow").__version__,
                              "keras": keras.__version__},
                 "dense_epochs": dense_epochs,
                 "accuracy_dense": acc(dense, ds.x_test, ds.y_test)}
    print("dense", out["accuracy_dense"], flush=True)

    # one-shot mask, no training: shrink must give the masked model's outputs
    # The callback applies masks inside fit: one batch at learning rate 0 applies a one-shot
    # mask (BatchNorm moving statistics take that one batch into account).
    masked = _training.copy_model(dense)
    masked.optimizer.learning_rate = 0.0
    masked.fit(ds.x_train[:bs], ds.y_train[:bs], epochs=1, batch_size=bs, verbose=0,
               callbacks=[Pruning(ConstantSparsity(cfg["sparsity"], begin_step=0),
                                  granularity="channel", round_to=cfg["round_to"])])
    small0, shrink_report = shrink(masked, return_report=True)
    x = ds.x_test[:200]
    out["shrink_max_abs_diff"] = float(np.abs(small0.predict(x, verbose=0)
                                              - masked.predict(x, verbose=0)).max())
    out["accuracy_channel_before_finetune"] = acc(small0, ds.x_test, ds.y_test)
    out["shrink"] = shrink_report.to_dict()
    print("one-shot", out["accuracy_channel_before_finetune"], out["shrink_max_abs_diff"],
          flush=True)

    small, result = prune(dense, ds, sparsity=cfg["sparsity"], granularity="channel",
                          epochs=cfg["prune_epochs"], batch_size=bs, shrink=True,
                          round_to=cfg["round_to"], verbose=2)
    out["accuracy_channel_pruned"] = result.accuracy_after
    out["shrink_finetuned"] = result.shrink_report.to_dict()
    # Fine-tune the shrunk model at a tenth of the training learning rate.
    small.optimizer.learning_rate = cfg["learning_rate"] / 10
    small.fit(ds.x_train, ds.y_train, epochs=cfg["finetune_epochs"], batch_size=bs, verbose=2)
    out["accuracy_channel_finetuned"] = acc(small, ds.x_test, ds.y_test)
    out["channel_params"] = small.count_params()
    out["dense_params"] = dense.count_params()

    unstructured, u_result = prune(dense, ds, sparsity=0.5,
                                   epochs=cfg["prune_epochs"] + cfg["finetune_epochs"],
                                   batch_size=bs, verbose=2)
    out["accuracy_unstructured"] = u_result.accuracy_after

    tmp = Path(tempfile.mkdtemp(prefix="tfc-channels-"))
    exports = {
        "dense_float32": to_tflite(dense, tmp / "dense_f32.tflite", "float32"),
        "dense_int8": to_tflite(dense, tmp / "dense_int8.tflite", "int8", ds),
        "unstructured50_int8": to_tflite(unstructured, tmp / "unstructured_int8.tflite", "int8",
                                         ds),
        f"channel{int(100 * cfg['sparsity'])}_shrunk_int8": to_tflite(
            small, tmp / "channel_int8.tflite", "int8", ds),
    }
    bench = {}
    for name, e in exports.items():
        r = benchmark(e.path, ds, runs=args.runs, threads=1).to_dict()
        bench[name] = {k: r[k] for k in ("size_bytes", "gzip_bytes", "latency_ms_p50",
                                         "latency_ms_p90", "accuracy", "fully_int8")}
        print(name, bench[name], flush=True)
    out["litert"] = bench
    d = bench["dense_int8"]["latency_ms_p50"]
    out["int8_speedup_p50"] = {k: round(d / v["latency_ms_p50"], 3) for k, v in bench.items()}
    folder = HERE / cfg["folder"]
    folder.mkdir(exist_ok=True)
    (folder / "channel_results.json").write_text(json.dumps(out, indent=2))
    (folder / "channel_results.md").write_text(_markdown(out))
    print(_markdown(out))


def _markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"# Channel pruning + shrink vs unstructured pruning: {r['model']}",
        "",
        f"Measured by `python models/compare_channels.py --model {r['model']}` on "
        f"{r['machine']} (TensorFlow {r['versions']['tensorflow']}, Keras "
        f"{r['versions']['keras']}). Data: {r['data']}. LiteRT, 1 thread, all models timed in "
        "the same run.",
        "",
        f"- Dense: {r['dense_params']:,} parameters, {100 * r['accuracy_dense']:.2f} % "
        f"({r['dense_epochs']} epochs: trained until its accuracy on held-out validation "
        "images stopped improving).",
        f"- {100 * s['sparsity']:.0f} % of channels, one-shot (no training) then shrink: "
        f"{r['shrink']['params_after']:,} parameters ({r['shrink']['param_ratio']:.2f}x), MACs "
        f"{r['shrink']['mac_ratio']:.2f}x; largest output difference to the masked model "
        f"{r['shrink_max_abs_diff']:.1e}; accuracy before fine-tuning "
        f"{100 * r['accuracy_channel_before_finetune']:.2f} %.",
        f"- Channel pruning while fine-tuning ({s['prune_epochs']} epochs; kept channel counts "
        f"rounded to multiples of {s['round_to']}), shrink "
        f"({r['shrink_finetuned']['param_ratio']:.2f}x parameters, "
        f"{r['shrink_finetuned']['mac_ratio']:.2f}x MACs), then "
        f"{s['finetune_epochs']} more epochs at a tenth of the learning rate: "
        f"{100 * r['accuracy_channel_pruned']:.2f} % -> "
        f"{100 * r['accuracy_channel_finetuned']:.2f} % "
        f"({100 * (r['accuracy_channel_finetuned'] - r['accuracy_dense']):+.2f} points vs dense).",
        f"- Unstructured 50 % ({s['prune_epochs'] + s['finetune_epochs']} epochs): "
        f"{100 * r['accuracy_unstructured']:.2f} %.",
        "",
        "| model | size | gzip | p50 ms | p90 ms | p50 speed-up vs dense int8 | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in r["litert"].items():
        lines.append(
            f"| {name} | {v['size_bytes']:,} | {v['gzip_bytes']:,} | {v['latency_ms_p50']:.3f} "
            f"| {v['latency_ms_p90']:.3f} | {r['int8_speedup_p50'][name]:.2f}x | "
            f"{100 * v['accuracy']:.2f} % |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
