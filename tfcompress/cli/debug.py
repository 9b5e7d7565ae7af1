"""`tfcompress debug`: which layers of a quantized `.tflite` file lose the most."""

import os

import click

from tfcompress.cli._common import (
    data_help,
    input_range_option,
    say,
    split_option,
    user_errors,
)


@click.command("debug")
@click.argument("model", type=click.Path(exists=True))
@click.argument("tflite", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, help=f"Images to run. {data_help}")
@click.option("--samples", default=64, show_default=True, type=click.IntRange(1),
              help="How many images.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for layer_errors.json, .txt and .png. [default: TFLITE's name "
                   "with _debug, beside it]")
@click.option("--top", default=3, show_default=True, type=click.IntRange(1),
              help="How many of the worst layers to name.")
@click.option("--unsafe", is_flag=True, help="Load a .keras file with Lambda layers (trusted "
                                             "files only).")
@split_option
@input_range_option
@user_errors
def debug_command(model, tflite, data, samples, out, top, unsafe, split, input_range):
    """Compare every layer of MODEL (.keras: the float model for a post-training file, the
    quantize_aware model for a QAT file) with its tensor in TFLITE, run in LiteRT.

    Prints a table sorted by the error each layer adds (SNR, cosine, RMSE in units of the int8
    scale, largest error) and writes it as JSON, text and a plot of error against depth.
    """
    from tfcompress import _io, _loading, _training
    from tfcompress.debug import layer_errors

    if out is None:
        stem = os.path.splitext(os.path.abspath(tflite))[0]
        out = f"{stem}_debug"
    _io.check_output_dir(out, lambda name: name.startswith("layer_errors."), model, tflite,
                         data)
    keras_model = _loading.load_keras_model(model, safe_mode=not unsafe, compile=False)
    if input_range is None:  # the model's own layer says, else the file's metadata
        from tfcompress import _metadata
        from tfcompress.data import Preprocessing

        meta = _metadata.read(tflite)
        if Preprocessing.from_model(keras_model) is None and meta is not None:
            input_range = meta.preprocessing()
    images = _training.load_for(keras_model, data, preprocessing=input_range).part(split)
    say(f"running {samples} images through {model} and {tflite}")
    result = layer_errors(keras_model, tflite, images, num_samples=samples)
    files = result.save(out)
    click.echo(str(result))
    click.echo(f"\nlayers adding the most error: {', '.join(e.layer for e in result.worst(top))}"
               f" (computed by {', '.join(result.culprits(top))})")
    say(f"wrote {', '.join(files)}")
