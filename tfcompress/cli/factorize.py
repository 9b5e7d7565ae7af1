"""`tfcompress factorize`: low-rank (SVD) factorization, optionally fine-tuned."""

import json

import click

from tfcompress._options import CONV_MODES, FACTORIZE
from tfcompress.cli._common import FloatRange, data_help, say, training_command, training_options


@click.command("factorize")
@click.argument("model", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the factorized model (.keras).")
@click.option("--energy", type=FloatRange(0, 1, min_open=True),
              help="Keep this share of each layer's singular-value energy (e.g. 0.9).")
@click.option("--rank-ratio", type=FloatRange(0, 1, min_open=True),
              help="Keep this fraction of each layer's full rank (e.g. 0.25).")
@click.option("--rank", "ranks", multiple=True, metavar="LAYER=R",
              help="Rank for one layer, e.g. fc1=16. Repeatable.")
@click.option("--conv-mode", type=click.Choice(CONV_MODES),
              default=FACTORIZE["conv_mode"],
              show_default=True, help="k x k then 1 x 1, or k x 1 then 1 x k.")
@click.option("--min-params", default=FACTORIZE["min_params"],
              show_default=True, type=click.IntRange(0),
              help="Leave layers with fewer weights alone.")
@click.option("--data", help=f"Fine-tune on this data and report accuracy. {data_help}")
@training_options(FACTORIZE, "Fine-tuning epochs (with --data).", min_epochs=0)
@training_command()
def factorize_command(model, output, energy, rank_ratio, ranks, conv_mode, min_params, data,
                      epochs, batch_size, unsafe, as_json,
        input_range):
    """Split MODEL's large Dense/Conv2D layers in two by truncated SVD; report params and MACs."""
    from tfcompress import _io, _loading, _training
    from tfcompress.lowrank import factorize

    _io.check_not_input(output, model, data)
    if rank_ratio is not None and energy is not None:
        raise click.UsageError("Give --rank-ratio or --energy, not both.")
    if not output.endswith(".keras"):
        raise click.BadParameter(f"expected a .keras file name, got {output!r}.",
                                 param_hint="--output")
    per_layer = {}
    for item in ranks:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise click.BadParameter(f"expected LAYER=R with R >= 1, got {item!r}.",
                                     param_hint="--rank")
        per_layer[name] = int(value)
    original = _loading.load_keras_model(model, safe_mode=not unsafe)
    new, report = factorize(original, rank_ratio=rank_ratio, energy=energy, ranks=per_layer,
                            min_params=min_params, conv_mode=conv_mode, return_report=True)
    info = report.to_dict()
    if data is not None:
        ds = _training.load_for(original, data, preprocessing=input_range)
        settings = _training.compile_like(new, original)
        info["accuracy_before"] = _training.evaluate(original, ds.test)
        info["accuracy_factorized"] = _training.evaluate(new, ds.test)
        if epochs:
            say(f"fine-tuning for {epochs} epoch(s) with {settings} ...")
            _training.fit(new, ds.train, epochs=epochs, batch_size=batch_size,
                          verbose=0 if as_json else 2)
        info["accuracy_after"] = _training.evaluate(new, ds.test)
        info["epochs"] = epochs
    _io.save_model_atomic(new, output)
    info["output"] = output
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(str(report))
    if data is not None:
        click.echo(
            f"accuracy {100 * info['accuracy_before']:.2f}% -> "
            f"{100 * info['accuracy_factorized']:.2f}% factorized -> "
            f"{100 * info['accuracy_after']:.2f}% after {epochs} epoch(s)"
        )
    click.echo(f"saved {output}")
