"""`tfcompress compress`: run a recipe on a trained model and write a measured report."""

import json

import click

from tfcompress.cli._common import data_help, say, user_errors


@click.command("compress")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, help=f"Training and test data. {data_help}")
@click.option("--val", help="Validation data for searches (default: 10 % of the training part).")
@click.option("--recipe", default="default", show_default=True,
              help="A built-in recipe (default, quick, lowrank, distill) or a .yaml/.json file.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: every step's model, the .tflite files and the reports.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0), default=None,
              help="Accuracy budget in points against the input model (also bounds searches).")
@click.option("--seed", default=0, show_default=True, help="Seed of every step.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
              help="Timed LiteRT invocations per model.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--unsafe", is_flag=True,
              help="Allow the model file's Lambda layers to run their code (trusted files only).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
@user_errors
def compress_command(model, data, val, recipe, out_dir, max_accuracy_drop, seed, runs,
                     batch_size, unsafe, as_json):
    """Compress MODEL (.keras) step by step as RECIPE says; measure each step in LiteRT.

    Writes OUT: NN_<step>.keras and .tflite per step, report.json, report.md, report.png and
    state.json. Run the same command again to resume an interrupted run.
    """
    import os
    import re

    from tfcompress import _io
    from tfcompress.pipeline import compress

    # Outputs are named NN_<step>.keras/.tflite in OUT: the input must not be one of them.
    if os.path.abspath(out_dir) == os.path.dirname(os.path.abspath(model)) and re.match(
            r"\d\d_", os.path.basename(model)):
        raise click.BadParameter(
            f"{model} is named like this run's outputs (NN_<step>) inside OUT, and tfcompress "
            "never overwrites an input. Choose another output folder.", param_hint="--out")
    keras_model = _io.load_keras_model(model, safe_mode=not unsafe)
    result = compress(keras_model, data, recipe, out_dir, val=val,
                      max_accuracy_drop=max_accuracy_drop, seed=seed, runs=runs,
                      batch_size=batch_size, verbose=0, progress=say)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from tfcompress.pipeline._report import markdown

    click.echo(markdown(result))
    say(f"wrote {out_dir}/ (report.md, report.json, report.png, models)")
