"""`tfcompress export`: a Keras model to a verified `.tflite`."""

import json

import click

from tfcompress.cli._common import data_help, say, user_errors

_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")


@click.command("export")
@click.argument("model", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .tflite file.")
@click.option("--quantize", "quantization", type=click.Choice(_MODES), default="int8",
              show_default=True, help="Quantization mode.")
@click.option("--data", help=f"Calibration data for int8/int16x8. {data_help}")
@click.option("--integer-io", is_flag=True,
              help="int8/int16x8 only: integer input and output tensors too.")
@click.option("--calibration-samples", default=200, show_default=True, type=click.IntRange(1),
              help="Images used to calibrate activation ranges.")
@click.option("--unsafe", is_flag=True,
              help="Allow a .keras file's Lambda layers to run their code (trusted files only).")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
@user_errors
def export_command(model, output, quantization, data, integer_io, calibration_samples, unsafe,
                   as_json):
    """Convert MODEL (.keras file or SavedModel directory) to a verified .tflite file."""
    from tfcompress.export import to_tflite

    if quantization in ("int8", "int16x8") and not data:
        raise click.UsageError(
            f"--quantize {quantization} needs --data to calibrate activation ranges "
            "(e.g. --data mnist or --data train.npz)."
        )
    say(f"converting {model} to {quantization} ...")
    report = to_tflite(model, output, quantization, representative_data=data,
                       integer_io=integer_io, num_calibration_samples=calibration_samples,
                       safe_mode=not unsafe)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else str(report))
