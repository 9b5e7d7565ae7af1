"""`tfcompress demo`: the main job, end to end on built-in data, with no arguments."""

import json
import os

import click

from tfcompress.cli._common import data_help, say, user_errors


@click.command("demo")
@click.option("--out", default="tfcompress-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for every model and report.")
@click.option("--data", default="mnist", show_default=True, help=data_help)
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1),
              help="Training epochs of the dense model.")
@click.option("--prune-epochs", default=4, show_default=True, type=click.IntRange(1),
              help="Fine-tuning epochs while pruning.")
@click.option("--sparsity", default=0.8, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--qat-epochs", default=1, show_default=True, type=click.IntRange(1),
              help="Quantization-aware fine-tuning epochs.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
              help="Timed LiteRT invocations per model.")
@click.option("--seed", default=0, show_default=True, help="Seed of the data split and weights.")
@user_errors
def demo_command(out, data, epochs, prune_epochs, sparsity, qat_epochs, runs, seed):
    """Train the reference CNN; prune, QAT, distill and factorize it; export; benchmark in LiteRT.

    Everything is written to OUT: the .keras models, the .tflite files, report.json and
    report.txt. No network is needed.
    """
    import keras

    from tfcompress import _io, _training
    from tfcompress.bench import benchmark, compare
    from tfcompress.data import load
    from tfcompress.distillation import distill
    from tfcompress.export import to_tflite
    from tfcompress.lowrank import factorize
    from tfcompress.pruning import prune
    from tfcompress.quantization import train_quantized
    from tfcompress.reference import compile_for_classification, reference_cnn

    os.makedirs(out, exist_ok=True)
    ds = load(data, seed=seed)
    say(f"data: {ds}")
    keras.utils.set_random_seed(seed)
    model = compile_for_classification(reference_cnn(ds.input_shape, ds.num_classes))
    say(f"[1/7] training the reference CNN ({model.count_params():,} parameters) for "
        f"{epochs} epochs")
    model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=64, verbose=2)
    _io.save_model_atomic(model, os.path.join(out, "dense.keras"))
    dense_acc = _training.accuracy(model, ds.x_test, ds.y_test)

    say(f"[2/7] pruning to {sparsity:.0%} sparsity while fine-tuning for {prune_epochs} epochs")
    pruned, result = prune(model, ds, sparsity=sparsity, epochs=prune_epochs, verbose=2)
    _io.save_model_atomic(pruned, os.path.join(out, "pruned.keras"))

    say(f"[3/7] quantization-aware training of the dense and the pruned model "
        f"({qat_epochs} epoch(s) each)")
    qat, qat_result = train_quantized(model, ds, epochs=qat_epochs, verbose=2)
    pruned_qat, pruned_qat_result = train_quantized(pruned, ds, epochs=qat_epochs, verbose=2)

    student = reference_cnn(ds.input_shape, ds.num_classes, width=0.5, name="student")
    say(f"[4/7] distilling the CNN into a student with {student.count_params():,} parameters "
        f"({epochs} epochs)")
    student, distill_result = distill(model, student, ds, epochs=epochs, verbose=2)
    _io.save_model_atomic(student, os.path.join(out, "student.keras"))

    say("[5/7] factorizing the CNN (truncated SVD, a quarter of each rank) and fine-tuning it "
        "for 1 epoch")
    factorized, factor_report = factorize(model, rank_ratio=0.25, return_report=True)
    _training.compile_like(factorized, model)
    factorized.fit(ds.x_train, ds.y_train, epochs=1, batch_size=64, verbose=2)
    factorized_acc = _training.accuracy(factorized, ds.x_test, ds.y_test)
    _io.save_model_atomic(factorized, os.path.join(out, "factorized.keras"))

    say("[6/7] exporting to TFLite and verifying each file in LiteRT")
    exports = [
        to_tflite(model, os.path.join(out, "dense_float32.tflite"), "float32"),
        to_tflite(model, os.path.join(out, "dense_int8_ptq.tflite"), "int8",
                  representative_data=ds),
        to_tflite(qat, os.path.join(out, "dense_int8_qat.tflite"), "int8"),
        to_tflite(pruned_qat, os.path.join(out, "pruned_int8_qat.tflite"), "int8"),
        to_tflite(student, os.path.join(out, "student_int8_ptq.tflite"), "int8",
                  representative_data=ds),
        to_tflite(factorized, os.path.join(out, "factorized_int8_ptq.tflite"), "int8",
                  representative_data=ds),
    ]
    say(f"[7/7] benchmarking in LiteRT ({runs} runs each, 1 thread, {len(ds.x_test)} test "
        "images)")
    reports = [benchmark(e.path, ds, runs=runs, progress=say) for e in exports]
    table = compare(reports)
    summary = (
        f"Keras accuracy: dense {100 * dense_acc:.2f}%, pruned {100 * result.accuracy_after:.2f}%"
        f" at sparsity {result.sparsity_after:.3f}, dense QAT "
        f"{100 * qat_result.accuracy_qat:.2f}%, pruned QAT "
        f"{100 * pruned_qat_result.accuracy_qat:.2f}%, distilled student "
        f"{100 * distill_result.student_accuracy:.2f}% ({distill_result.param_ratio:.2f}x the "
        f"parameters), factorized {100 * factorized_acc:.2f}% ({factor_report.param_ratio:.2f}x "
        f"the parameters)\n\n{table}\n"
    )
    click.echo("\n" + summary)
    _io.write_text_atomic(os.path.join(out, "report.txt"), summary)
    _io.write_text_atomic(
        os.path.join(out, "report.json"),
        json.dumps({
            "data": ds.name,
            "keras_accuracy": {"dense": dense_acc, "pruned": result.accuracy_after,
                               "dense_qat": qat_result.accuracy_qat,
                               "pruned_qat": pruned_qat_result.accuracy_qat,
                               "student": distill_result.student_accuracy,
                               "factorized": factorized_acc},
            "pruning": result.to_dict(),
            "distillation": distill_result.to_dict(),
            "factorization": factor_report.to_dict(),
            "exports": [e.to_dict() for e in exports],
            "benchmarks": [r.to_dict() for r in reports],
        }, indent=2),
    )
    say(f"wrote {out}/ (models, report.txt, report.json)")
