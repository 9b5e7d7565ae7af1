"""`tfcompress demo`: the main job, end to end on built-in data, with no arguments."""

import os

import click

from tfcompress.cli._common import FloatRange, data_help, say, user_errors


@click.command("demo")
@click.option("--out", default="tfcompress-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for every model and report.")
@click.option("--task", type=click.Choice(("classification", "detection")),
              default="classification", show_default=True,
              help="classification: the reference CNN on mnist; detection: the reference "
                   "SSD-lite detector on shapes-detect, judged by mAP@0.5.")
@click.option("--data", default=None,
              help=f"{data_help} [default: mnist, or shapes-detect for detection]")
@click.option("--epochs", default=None, type=click.IntRange(1),
              help="Training epochs of the reference model [default: 5, or 15 for "
                   "detection].")
@click.option("--recipe", default="default", show_default=True,
              help="A built-in recipe (auto: chosen from the model and the data; default, "
                   "quick, lowrank, distill; `tfcompress recipes` lists them) or a .yaml/.json "
                   "file.")
@click.option("--max-accuracy-drop", default=1.0, show_default=True, type=FloatRange(0),
              help="Accuracy budget in points against the trained CNN.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
              help="Timed LiteRT invocations per model.")
@click.option("--seed", default=0, show_default=True, help="Seed of the data split and weights.")
@user_errors
def demo_command(task, out, data, epochs, recipe, max_accuracy_drop, runs, seed):
    """Train a reference model, then compress it with a recipe, measuring every step in LiteRT.

    This is `tfcompress compress` on a freshly trained model: OUT gets every step's model and
    .tflite file, report.md (the table printed here), report.json and report.png. No network
    is needed. With --task detection, the reference detector is trained on shapes-detect and
    every figure is mAP@0.5.
    """
    import keras

    from tfcompress import _io, _loading
    from tfcompress.data import load
    from tfcompress.pipeline import compress
    from tfcompress.pipeline._report import markdown
    from tfcompress.pipeline._run import is_run_output
    from tfcompress.reference import (
        compile_for_classification,
        compile_for_detection,
        reference_cnn,
        reference_detector,
    )

    detection = task == "detection"
    data = data or ("shapes-detect" if detection else "mnist")
    epochs = epochs or (15 if detection else 5)
    _io.check_output_dir(out, is_run_output, data, recipe)
    os.makedirs(out, exist_ok=True)
    # The validation images (for the recipe's searches) are never shown to the trained CNN.
    ds, val = load(data, seed=seed).hold_out(seed=seed)  # the pipeline's own split
    say(f"data: {ds}, {len(val[0])} more images held out for validation")
    model_path = os.path.join(out, "trained.keras")
    if os.path.exists(model_path):
        say(f"using the model trained earlier: {model_path}")
        model = _loading.load_keras_model(model_path)
    else:
        keras.utils.set_random_seed(seed)
        if detection:
            model = compile_for_detection(reference_detector(
                ds.input_shape, len(ds.class_names), alpha=0.5), 3e-3)
        else:
            model = compile_for_classification(reference_cnn(ds.input_shape, ds.num_classes))
        say(f"training the reference {'detector' if detection else 'CNN'} "
            f"({model.count_params():,} parameters) for {epochs} epochs")
        model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=32 if detection else 64,
                  verbose=2)
        _io.save_model_atomic(model, model_path)
    say(f"compressing with recipe {recipe!r}")
    result = compress(model, ds, recipe, out, val=val, max_accuracy_drop=max_accuracy_drop,
                      seed=seed, runs=runs, progress=say)
    click.echo("\n" + markdown(result))
    say(f"wrote {out}/ (models, report.md, report.json, report.png)")
