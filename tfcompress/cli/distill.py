"""`tfcompress distill`: train a small student from a trained teacher."""

import json

import click

from tfcompress.cli._common import data_help, say, user_errors


@click.command("distill")
@click.option("--teacher", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The trained teacher (.keras).")
@click.option("--student", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The student to train (.keras; its weights are the starting point).")
@click.option("--data", required=True, help=f"Training data. {data_help}")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the trained student (.keras).")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--learning-rate", default=1e-3, show_default=True,
              type=click.FloatRange(0, min_open=True))
@click.option("--temperature", default=4.0, show_default=True,
              type=click.FloatRange(0, min_open=True), help="Softmax temperature.")
@click.option("--alpha", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the hard-label loss (the rest goes to the teacher's targets).")
@click.option("--feature-layers", nargs=2, metavar="TEACHER_LAYER STUDENT_LAYER",
              help="Also match these intermediate layers (projected if widths differ).")
@click.option("--unsafe", is_flag=True,
              help="Allow the model files' Lambda layers to run their code (trusted files only).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def distill_command(teacher, student, data, output, epochs, batch_size, learning_rate,
                    temperature, alpha, feature_layers, unsafe, as_json):
    """Distill TEACHER into STUDENT on DATA; report both accuracies and sizes."""
    from tfcompress import _io
    from tfcompress.distillation import distill

    _io.check_not_input(output, teacher)
    _io.check_not_input(output, student)
    if not output.endswith(".keras"):
        raise click.BadParameter(f"expected a .keras file name, got {output!r}.",
                                 param_hint="--output")
    t = _io.load_keras_model(teacher, safe_mode=not unsafe)
    s = _io.load_keras_model(student, safe_mode=not unsafe)
    say(f"distilling {teacher} into {student} for {epochs} epoch(s) ...")
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
