"""`tfcompress distill`: train a small student from a trained teacher."""

import json

import click

from tfcompress._options import DISTILL
from tfcompress.cli._common import FloatRange, data_help, say, training_command, training_options


@click.command("distill")
@click.option("--teacher", required=True, type=click.Path(exists=True),
              help="The trained teacher (.keras).")
@click.option("--student", type=click.Path(exists=True),
              help="The student to train (.keras; its weights are the starting point).")
@click.option("--channels", type=FloatRange(0, 1, max_open=True),
              help="Instead of --student: a copy of the teacher with this fraction of its "
                   "channels removed (largest filters kept).")
@click.option("--fold-pooling", is_flag=True,
              help="Instead of --student (or with --channels): turn each conv + 2x2 pooling "
                   "of the teacher into a stride-2 conv.")
@click.option("--input-downscale", type=click.IntRange(1), default=1, show_default=True,
              help="Instead of --student (or with --channels): run the copy at the input's "
                   "resolution divided by this (an input average pooling; for models that pool "
                   "globally before their head).")
@click.option("--data", required=True, help=f"Training data. {data_help}")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the trained student (.keras).")
@training_options(DISTILL)
@click.option("--temperature", default=DISTILL["temperature"], show_default=True,
              type=FloatRange(0, min_open=True), help="Softmax temperature.")
@click.option("--alpha", default=DISTILL["alpha"],
              show_default=True, type=FloatRange(0, 1),
              help="Weight of the hard-label loss (the rest goes to the teacher's targets).")
@click.option("--feature-layers", nargs=2, metavar="TEACHER_LAYER STUDENT_LAYER",
              help="Also match these intermediate layers (projected if widths differ).")
@training_command("model files'")
def distill_command(teacher, student, channels, fold_pooling, input_downscale, data, output,
                    epochs, batch_size, learning_rate, temperature, alpha, feature_layers,
                    unsafe, as_json, input_range):
    """Distill TEACHER into a student on DATA; report both accuracies and sizes.

    The student is a .keras file (--student) or made from the teacher (--channels and/or
    --fold-pooling).
    """
    from tfcompress import _io, _loading, _training
    from tfcompress.distillation import distill, make_student

    made = channels is not None or fold_pooling or input_downscale > 1
    if (student is None) == (not made):
        raise click.UsageError(
            "Give the student either as a file (--student S.keras) or as a copy of the "
            "teacher (--channels R, --fold-pooling, --input-downscale N), not both." if student
            else "No student: pass --student S.keras, or --channels R, --fold-pooling and/or "
            "--input-downscale N to make one from the teacher.")
    _io.check_not_input(output, teacher, student, data)
    if not output.endswith(".keras"):
        raise click.BadParameter(f"expected a .keras file name, got {output!r}.",
                                 param_hint="--output")
    t = _loading.load_keras_model(teacher, safe_mode=not unsafe)
    data = _training.load_for(t, data, preprocessing=input_range)  # checked first
    if student is not None:
        s = _loading.load_keras_model(student, safe_mode=not unsafe)
    else:
        s, report = make_student(t, channels or 0.0, fold_pooling=fold_pooling,
                                 input_downscale=input_downscale, return_report=True)
        if not as_json:
            say(str(report))
    say(f"distilling {teacher} into {student or s.name} for {epochs} epoch(s) ...")
    trained, result = distill(t, s, data, epochs=epochs, batch_size=batch_size,
                              learning_rate=learning_rate, temperature=temperature, alpha=alpha,
                              feature_layers=tuple(feature_layers) if feature_layers else None,
                              verbose=0 if as_json else 2)
    _io.save_model_atomic(trained, output)
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "output": output}, indent=2))
        return
    click.echo(
        f"teacher {100 * result.teacher_accuracy:.2f}% ({result.teacher_params:,} params), "
        f"student {100 * result.student_accuracy:.2f}% ({result.student_params:,} params, "
        f"{result.param_ratio:.2f}x); saved {output}"
    )
