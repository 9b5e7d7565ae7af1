"""`tfcompress export`: a Keras model to a verified `.tflite` (and a microcontroller artifact)."""

import json

import click

from tfcompress._targets import TARGETS
from tfcompress.cli._common import data_help, say, user_errors

_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")


@click.command("export")
@click.argument("model", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .tflite file.")
@click.option("--quantize", "quantization", type=click.Choice(_MODES), default="int8",
              show_default=True, help="Quantization mode.")
@click.option("--data", help="Calibration data for int8/int16x8 (not needed for a model from "
                             f"QAT), also used to check agreement. {data_help}")
@click.option("--target", type=click.Choice(TARGETS), default="litert", show_default=True,
              help="Runtime to verify on: LiteRT (XNNPACK), LiteRT's reference kernels, or "
                   "TFLite Micro (writes .h/.cc/_ops.h beside the file; needs the micro extra).")
@click.option("--integer-io/--float-io", default=None,
              help="int8/int16x8: integer input and output tensors (default: on for tflm).")
@click.option("--max-flash", type=click.IntRange(1), metavar="BYTES",
              help="tflm: refuse a model larger than this.")
@click.option("--max-ram", type=click.IntRange(1), metavar="BYTES",
              help="tflm: refuse a model whose tensor arena is larger than this.")
@click.option("--calibration-samples", default=200, show_default=True, type=click.IntRange(1),
              help="Images used to calibrate activation ranges.")
@click.option("--allow-float", is_flag=True,
              help="int8/int16x8 of a quantization-aware model: keep the layers it leaves in "
                   "float (qat --float-layer) as float ops instead of refusing them.")
@click.option("--unsafe", is_flag=True,
              help="Allow a .keras file's Lambda layers to run their code (trusted files only).")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
@user_errors
def export_command(model, output, quantization, data, target, integer_io, max_flash, max_ram,
                   calibration_samples, allow_float, unsafe, as_json):
    """Convert MODEL (.keras file or SavedModel directory) to a verified .tflite file."""
    from tfcompress.export import to_tflite

    if target != "tflm" and (max_flash or max_ram):
        raise click.UsageError("--max-flash and --max-ram go with --target tflm.")
    say(f"converting {model} to {quantization} for {target} ...")
    report = to_tflite(model, output, quantization, representative_data=data,
                       integer_io=integer_io, num_calibration_samples=calibration_samples,
                       safe_mode=not unsafe, target=target, max_flash=max_flash,
                       max_ram=max_ram, allow_float=allow_float)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else str(report))
