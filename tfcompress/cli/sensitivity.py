"""`tfcompress sensitivity`: how much accuracy each layer alone loses to pruning, int8 or
thinning."""

import os

import click

from tfcompress.cli._common import (
    FloatRange,
    data_help,
    metric_of,
    metric_options,
    say,
    user_errors,
)

_TECHNIQUES = ("prune", "quantize", "channels", "int4")  # debug.TECHNIQUES, without TF


@click.command("sensitivity")
@click.argument("model", type=click.Path(exists=True))
@click.option("--data", required=True, help=f"Labelled images to score (its test split). "
                                            f"{data_help}")
@click.option("--technique", type=click.Choice(_TECHNIQUES), default="prune",
              show_default=True, help="What is done to one layer at a time (int4: every layer "
                                      "int8, one layer's weights at 4 bits).")
@click.option("--amount", type=FloatRange(0, 1, min_open=True, max_open=True),
              help="Sparsity for prune [0.8], fraction of channels for channels [0.5].")
@click.option("--samples", default=500, show_default=True, type=click.IntRange(1),
              help="Images scored per layer.")
@click.option("--target", type=FloatRange(0, 0.95),
              help="Also print per-layer sparsities (prune) or channel ratios (channels) with "
                   "this overall value.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for sensitivity_<technique>.json (reused when it matches) and .png. "
                   "[default: MODEL's name with _sensitivity, beside it]")
@click.option("--unsafe", is_flag=True, help="Load a .keras file with Lambda layers (trusted "
                                             "files only).")
@metric_options
@user_errors
def sensitivity_command(model, data, technique, amount, samples, target, out, unsafe, metric,
                        metric_direction):
    """Score MODEL with only one layer pruned, quantized to int8, or thinned, for every layer,
    most sensitive first."""
    import json

    from tfcompress import _io
    from tfcompress.debug import sensitivity
    from tfcompress.metrics import Metric

    metric = metric_of(metric, metric_direction)
    if target is not None and technique in ("quantize", "int4"):
        raise click.BadParameter("goes with --technique prune or channels.",
                                 param_hint="--target")
    if out is None:
        out = f"{os.path.splitext(os.path.abspath(model))[0]}_sensitivity"
    _io.check_output_dir(out, lambda name: name.startswith("sensitivity_"), model, data)
    cache = os.path.join(out, f"sensitivity_{technique}.json")
    say(f"scanning every layer of {model} ({technique}) on {samples} images")
    scan = sensitivity(model, data, technique, amount, samples, cache=cache,
                       safe_mode=not unsafe, metric=metric)
    plot = scan.plot(os.path.join(out, f"sensitivity_{technique}.png"))
    click.echo(str(scan))
    if technique == "quantize":
        shown = Metric.from_dict(scan.metric)
        click.echo(f"\nall layers quantized: {shown.format(scan.all_changed)}")
    if technique == "int4":
        shown = Metric.from_dict(scan.metric)
        chosen = scan.int4_layers()
        click.echo(f"\nall layers with 4-bit weights: {shown.format(scan.all_changed)}\n"
                   f"4-bit weights within 1 point of int8: {', '.join(chosen) or 'none'} "
                   f"(--weight-bits {','.join(f'{k}=4' for k in chosen) or '8'})")
    if target is not None:
        click.echo(f"\nper-layer values for an overall {target:g}: "
                   f"{json.dumps(scan.sparsities(target))}")
    say(f"wrote {cache}, {plot}")
