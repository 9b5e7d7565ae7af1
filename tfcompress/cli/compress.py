"""`tfcompress compress`: run a recipe on a trained model and write a measured report."""

import json

import click

from tfcompress._distribute import STRATEGIES
from tfcompress.cli._common import (
    DISTRIBUTE_HELP,
    FloatRange,
    TargetType,
    data_help,
    device_options,
    device_settings,
    input_range_option,
    metric_of,
    metric_options,
    say,
    unsafe_and_json,
    user_errors,
)

# Exit status of a run that finished but missed its accuracy budget, with --strict.
BUDGET_MISSED = 3


@click.command("compress")
@click.argument("model", type=click.Path(exists=True))
@click.option("--data", required=True, help=f"Training (and, without --test, test) data. "
                                            f"{data_help}")
@click.option("--val", help="Validation data for searches (default: 10 % of the training part).")
@click.option("--test", help="Images used only for the reported figures (then all of --data "
                             "trains). Pass images the model never saw.")
@click.option("--recipe", default="auto", show_default=True,
              help="A built-in recipe (auto: chosen from the model and the data; default, "
                   "quick, lowrank, distill; `tfcompress recipes` lists them) or a .yaml/.json "
                   "file.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(),
              help="Output folder: every step's model, the .tflite files and the reports.")
@click.option("--max-accuracy-drop", type=FloatRange(0), default=None,
              help="The budget: how much worse than the input model the metric may get (also "
                   "bounds searches), in points for top1/top5 (default 1) and in the metric's "
                   "own units otherwise (then required).")
@click.option("--strict", is_flag=True,
              help=f"Exit with status {BUDGET_MISSED} when the final model misses the budget.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help="Seed of every step.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
              help="Timed LiteRT invocations per model.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--distribute", type=click.Choice(STRATEGIES), default=None,
              help=DISTRIBUTE_HELP)
@click.option("--target", type=TargetType(), default=None,
              help="Where the final file runs (as for export; default: the recipe's, litert). "
                   "With device budgets, searches keep only models that fit them; with an Arm "
                   "Ethos-U target (ethos-u55-128, ...) they rank by Vela's estimate, and the "
                   "report compares the input model's int8 file with the final one on the NPU.")
@device_options
@unsafe_and_json("model files'", "Print report.json instead of the table.")
@input_range_option
@metric_options
@user_errors
def compress_command(model, data, val, test, recipe, out_dir, max_accuracy_drop, strict, seed,
                     runs, batch_size, distribute, target, unsafe, as_json, input_range, metric,
                     metric_direction, **device):
    """Compress MODEL (.keras) step by step as RECIPE says; measure each step in LiteRT.

    Writes OUT: NN_<step>.keras and .tflite per step, report.json, report.md, report.png and
    state.json. Run the same command again to resume an interrupted run. Exit status: 0 when
    the run finished (with --strict: and met the budget), 1 for a mistake in the input
    (nothing written), 3 with --strict when the budget was missed.
    """
    from tfcompress.pipeline import compress

    result = compress(model, data, recipe, out_dir, val=val, test=test,
                      max_accuracy_drop=max_accuracy_drop, seed=seed, runs=runs,
                      batch_size=batch_size, verbose=0, progress=say, safe_mode=not unsafe,
                      distribute=distribute, preprocessing=input_range,
                      metric=metric_of(metric, metric_direction), target=target,
                      device=device_settings(device) or None)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from tfcompress.pipeline._report import markdown

        click.echo(markdown(result))
        say(f"wrote {out_dir}/ (report.md, report.json, report.png, models)")
    if strict and not result.meets_budget:
        say(f"--strict: the final model misses the budget ({result.worse_by:.4g} worse than the "
            f"input model, {result.max_accuracy_drop:g} allowed)")
        raise SystemExit(BUDGET_MISSED)
