"""Distillation and low-rank factorization on `mnist`, measured in one run.

1. Distillation: a teacher (reference CNN, width 2) and a student (width 0.5, under 1/4 of the
   teacher's parameters). For each seed the student starts from the same initial weights and
   trains once from the labels only and once distilled. Every model here (teacher, students,
   the factorized CNN's base) trains until its accuracy on validation images held out of the
   training part stops improving (best weights kept).
2. Teacher outputs computed per batch vs once (`precompute_teacher`): fit time ratio.
3. Factorization: the reference CNN (width 1) with `rank_ratio`, fine-tuned one epoch; int8
   export checked integer-only; LiteRT latency of the original and the factorized model.
4. The distilled student, pruned to 50 % and quantization-aware trained, as int8, against the
   teacher's float32 TFLite: size, gzip size, latency and accuracy.

    python models/mnist_cnn/compare_distill_lowrank.py   # writes distill_lowrank_results.*
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # models/, for _shared
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rank-ratio", type=float, default=0.25)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    import keras
    from _shared import fit_converged

    import tfcompress as tfc
    from tfcompress import _training
    from tfcompress.bench import benchmark
    from tfcompress.distillation import Distiller
    from tfcompress.export import to_tflite
    from tfcompress.lowrank import factorize
    from tfcompress.pruning import prune
    from tfcompress.quantization import train_quantized
    from tfcompress.reference import compile_for_classification, reference_cnn

    ds, val = tfc.data.load("mnist").hold_out(0.15, seed=0)
    x, y = ds.x_train, ds.y_train

    def converge(model) -> int:
        return fit_converged(model, (x, y), val, keras.callbacks)
    acc = _training.accuracy
    tmp = Path(tempfile.mkdtemp(prefix="tfc-distill-"))
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "versions": {"tensorflow": __import__("tensorflow").__version__,
                                  "keras": keras.__version__}, "settings": vars(args) | {
                                      "out": str(args.out)}}

    # 1. distillation vs scratch --------------------------------------------------------------
    keras.utils.set_random_seed(100)
    teacher = compile_for_classification(reference_cnn(width=2, name="teacher"))
    teacher_epochs = converge(teacher)
    t_acc = acc(teacher, ds.x_test, ds.y_test)
    rows = []
    students = {}
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        init = reference_cnn(width=0.5, name="student").get_weights()
        scratch = reference_cnn(width=0.5, name="student")
        scratch.set_weights(init)
        compile_for_classification(scratch)
        keras.utils.set_random_seed(seed)
        scratch_epochs = converge(scratch)
        student = reference_cnn(width=0.5, name="student")
        student.set_weights(init)
        keras.utils.set_random_seed(seed)
        d = Distiller(teacher, student, temperature=4.0, alpha=0.1, precompute_teacher=True)
        d.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        distilled_epochs = converge(d)
        rows.append({"seed": seed, "scratch": acc(scratch, ds.x_test, ds.y_test),
                     "distilled": acc(student, ds.x_test, ds.y_test),
                     "scratch_epochs": scratch_epochs, "distilled_epochs": distilled_epochs})
        students[seed] = student
        print(f"seed {seed}: {rows[-1]}", flush=True)
    results["distillation"] = {
        "teacher_params": teacher.count_params(), "student_params": students[0].count_params(),
        "param_ratio": round(students[0].count_params() / teacher.count_params(), 4),
        "teacher_accuracy": t_acc, "teacher_epochs": teacher_epochs, "seeds": rows,
        "scratch_mean": statistics.mean(r["scratch"] for r in rows),
        "distilled_mean": statistics.mean(r["distilled"] for r in rows),
        "temperature": 4.0, "alpha": 0.1,
    }

    # 2. teacher per batch vs precomputed -----------------------------------------------------
    times = {}
    for pre in (False, True, False, True):
        s = reference_cnn(width=0.5, name="student")
        d = Distiller(teacher, s, precompute_teacher=pre)
        d.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        start = time.perf_counter()
        d.fit(x, y, epochs=3, batch_size=64, verbose=0)
        times.setdefault(pre, []).append(time.perf_counter() - start)
    results["precompute"] = {
        "fit_seconds_per_batch_teacher": min(times[False]),
        "fit_seconds_precomputed": min(times[True]),
        "speedup": round(min(times[False]) / min(times[True]), 3), "epochs": 3,
    }
    print(results["precompute"], flush=True)

    # 3. factorization ------------------------------------------------------------------------
    keras.utils.set_random_seed(0)
    base = compile_for_classification(reference_cnn())
    base_epochs = converge(base)
    fac, report = factorize(base, rank_ratio=args.rank_ratio, return_report=True)
    _training.compile_like(fac, base)
    fac_acc0 = acc(fac, ds.x_test, ds.y_test)
    fac.fit(x, y, epochs=1, batch_size=64, verbose=0)
    exports = {
        "cnn_float32": to_tflite(base, tmp / "cnn_f32.tflite", "float32"),
        "cnn_int8": to_tflite(base, tmp / "cnn_int8.tflite", "int8", ds),
        "factorized_float32": to_tflite(fac, tmp / "fac_f32.tflite", "float32"),
        "factorized_int8": to_tflite(fac, tmp / "fac_int8.tflite", "int8", ds),
    }
    bench = {k: benchmark(e.path, ds, runs=args.runs, threads=1).to_dict()
             for k, e in exports.items()}
    results["factorization"] = {
        "report": report.to_dict(), "accuracy_base": acc(base, ds.x_test, ds.y_test),
        "base_epochs": base_epochs,
        "accuracy_factorized_before_finetune": fac_acc0,
        "accuracy_factorized_after_1_epoch": acc(fac, ds.x_test, ds.y_test),
        "int8_integer_only": exports["factorized_int8"].integer_only,
        "int8_float_ops": [str(op) for op in exports["factorized_int8"].float_ops],
        "litert": {k: _slim(v) for k, v in bench.items()},
    }
    print(json.dumps(results["factorization"]["litert"], indent=1), flush=True)

    # 4. distilled student -> 50 % pruned -> QAT -> int8 vs teacher float32 -------------------
    student = students[0]
    _training.compile_like(student, teacher)
    pruned, prune_result = prune(student, ds, sparsity=0.5, epochs=3)
    qat, qat_result = train_quantized(pruned, ds, epochs=1)
    final = {
        "teacher_float32": to_tflite(teacher, tmp / "teacher_f32.tflite", "float32"),
        "student_pruned_qat_int8": to_tflite(qat, tmp / "student_int8.tflite", "int8"),
    }
    bench = {k: benchmark(e.path, ds, runs=args.runs, threads=1).to_dict()
             for k, e in final.items()}
    results["student_pipeline"] = {
        "sparsity": prune_result.sparsity_after,
        "accuracy_distilled": prune_result.accuracy_before,
        "accuracy_pruned": prune_result.accuracy_after, "accuracy_qat": qat_result.accuracy_qat,
        "litert": {k: _slim(v) for k, v in bench.items()},
    }
    t, s = bench["teacher_float32"], bench["student_pruned_qat_int8"]
    results["student_pipeline"]["vs_teacher"] = {
        "size_ratio": round(s["size_bytes"] / t["size_bytes"], 4),
        "gzip_ratio": round(s["gzip_bytes"] / t["gzip_bytes"], 4),
        "latency_speedup_p50": round(t["latency_ms_p50"] / s["latency_ms_p50"], 3),
        "accuracy_delta_points": round(100 * (s["accuracy"] - t["accuracy"]), 2),
    }
    print(json.dumps(results["student_pipeline"], indent=1), flush=True)
    (args.out / "distill_lowrank_results.json").write_text(json.dumps(results, indent=2))
    (args.out / "distill_lowrank_results.md").write_text(_markdown(results))
    print(_markdown(results))


def _slim(d: dict) -> dict:
    keys = ("size_bytes", "gzip_bytes", "latency_ms_p50", "latency_ms_p90", "accuracy",
            "fully_int8")
    return {k: d[k] for k in keys}


def _markdown(r: dict) -> str:
    from _shared import PATIENCE

    d, p, f, s = r["distillation"], r["precompute"], r["factorization"], r["student_pipeline"]
    lines = [
        "# Distillation and low-rank factorization on mnist",
        "",
        f"Measured by `python models/mnist_cnn/compare_distill_lowrank.py` on {r['machine']} "
        f"(TensorFlow {r['versions']['tensorflow']}, Keras {r['versions']['keras']}). "
        "Accuracy is on the 1,000 held-out test images.",
        "",
        "## Distillation (same initial weights, each trained to convergence)",
        "",
        f"Teacher: reference CNN width 2, {d['teacher_params']:,} parameters, "
        f"{100 * d['teacher_accuracy']:.2f} % ({d['teacher_epochs']} epochs). Student: width "
        f"0.5, {d['student_params']:,} parameters ({d['param_ratio']:.3f}x the teacher). "
        f"T = {d['temperature']}, alpha = {d['alpha']}. Every model trains until its accuracy "
        "on validation digits held out of the training part has not improved for "
        f"{PATIENCE} epochs (best weights kept).",
        "",
        "| seed | scratch (epochs) | distilled (epochs) |",
        "|---|---|---|",
        *[f"| {row['seed']} | {100 * row['scratch']:.2f} % ({row['scratch_epochs']}) | "
          f"{100 * row['distilled']:.2f} % ({row['distilled_epochs']}) |"
          for row in d["seeds"]],
        f"| **mean** | **{100 * d['scratch_mean']:.2f} %** | "
        f"**{100 * d['distilled_mean']:.2f} %** |",
        "",
        f"Teacher outputs computed once instead of per batch: fit time "
        f"{p['fit_seconds_per_batch_teacher']:.1f} s -> {p['fit_seconds_precomputed']:.1f} s "
        f"({p['speedup']:.2f}x, {p['epochs']} epochs, best of 2).",
        "",
        "## Low-rank factorization (reference CNN, 1 epoch of fine-tuning)",
        "",
        f"Base trained {f['base_epochs']} epochs. Parameters "
        f"{f['report']['params_before']:,} -> {f['report']['params_after']:,} "
        f"({f['report']['param_ratio']:.2f}x), MACs {f['report']['mac_ratio']:.2f}x. Accuracy "
        f"{100 * f['accuracy_base']:.2f} % -> {100 * f['accuracy_factorized_before_finetune']:.2f}"
        f" % before fine-tuning -> {100 * f['accuracy_factorized_after_1_epoch']:.2f} % after. "
        f"int8 integer-only: {f['int8_integer_only']}.",
        "",
        _table(f["litert"]),
        "",
        "## Distilled student, pruned to 50 % and quantization-aware trained, vs the teacher",
        "",
        f"Student accuracy (Keras): distilled {100 * s['accuracy_distilled']:.2f} %, pruned "
        f"{100 * s['accuracy_pruned']:.2f} % (sparsity {s['sparsity']:.3f}), QAT "
        f"{100 * s['accuracy_qat']:.2f} %.",
        "",
        _table(s["litert"]),
        "",
        f"Student int8 vs teacher float32: size {s['vs_teacher']['size_ratio']:.3f}x, gzip "
        f"{s['vs_teacher']['gzip_ratio']:.3f}x, p50 latency "
        f"{s['vs_teacher']['latency_speedup_p50']:.2f}x faster, accuracy "
        f"{s['vs_teacher']['accuracy_delta_points']:+.2f} points.",
        "",
    ]
    return "\n".join(lines)


def _table(rows: dict) -> str:
    out = ["| model | size | gzip | p50 ms | p90 ms | accuracy | integer-only |",
           "|---|---|---|---|---|---|---|"]
    for name, v in rows.items():
        out.append(f"| {name} | {v['size_bytes']:,} | {v['gzip_bytes']:,} | "
                   f"{v['latency_ms_p50']:.3f} | {v['latency_ms_p90']:.3f} | "
                   f"{100 * v['accuracy']:.2f} % | {v['fully_int8']} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
