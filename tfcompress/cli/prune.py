"""`tfcompress prune`: fine-tune a saved model while pruning it."""

import json

import click

from tfcompress._options import CRITERIA, PRUNE, SCOPES
from tfcompress.cli._common import FloatRange, data_help, say, training_command, training_options


@click.command("prune")
@click.argument("model", type=click.Path(exists=True))
@click.option("--data", required=True, help=f"Training data. {data_help}")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the pruned .keras model.")
@click.option("--sparsity", type=FloatRange(0, 1, min_open=True, max_open=True),
              help="Final sparsity (fraction of channels for 'channel'). Default: 0.8, "
                   "1 - N/M for N:M, 0.5 for channel.")
@click.option("--granularity", default=PRUNE["granularity"], show_default=True,
              help="'unstructured', N:M such as '2:4', or 'channel' (whole filters).")
@click.option("--criterion", type=click.Choice(CRITERIA), default=PRUNE["criterion"],
              show_default=True, help="How channels are ranked (with --granularity channel).")
@click.option("--round-to", default=PRUNE["round_to"],
              show_default=True, type=click.IntRange(1),
              help="Keep channel counts at multiples of this (8 runs fastest in LiteRT int8).")
@click.option("--shrink", is_flag=True, default=PRUNE["shrink"],
              help="After channel pruning, remove the pruned channels: a smaller, faster model.")
@click.option("--scope", type=click.Choice(SCOPES), default=PRUNE["scope"],
              show_default=True, help="Per-layer targets or one global threshold.")
@training_options(PRUNE, "Fine-tuning epochs.")
@training_command()
def prune_command(model, data, output, sparsity, granularity, criterion, round_to, shrink,
                  scope,
                  epochs, batch_size, unsafe, as_json,
        input_range):
    """Prune MODEL (.keras) by magnitude while fine-tuning it; report accuracy and sparsity."""
    from tfcompress import _io, _loading, _training
    from tfcompress.pruning import prune

    _io.check_not_input(output, model, data)
    if ":" in granularity and sparsity is not None:
        n, _, m = granularity.partition(":")
        if n.isdigit() and m.isdigit() and int(m) and abs(sparsity - (1 - int(n) / int(m))) > 1e-9:
            raise click.UsageError(
                f"--granularity {granularity} sets the sparsity to {1 - int(n) / int(m):g} by "
                f"itself; leave out --sparsity (got {sparsity:g}).")
    if not output.endswith(".keras"):
        raise click.BadParameter(f"expected a .keras file name, got {output!r}.",
                                 param_hint="--output")
    keras_model = _loading.load_keras_model(model, safe_mode=not unsafe)
    data = _training.load_for(keras_model, data, preprocessing=input_range)  # checked first
    say(f"pruning {model} to {granularity} sparsity for {epochs} epoch(s) ...")
    pruned, result = prune(keras_model, data, sparsity=sparsity, granularity=granularity,
                           scope=scope, epochs=epochs, batch_size=batch_size,
                           verbose=0 if as_json else 2, criterion=criterion,
                           round_to=round_to, shrink=shrink)
    _io.save_model_atomic(pruned, output)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(str(result.report))
    if result.shrink_report is not None:
        click.echo(str(result.shrink_report))
    click.echo(
        f"accuracy {100 * result.accuracy_before:.2f}% -> {100 * result.accuracy_after:.2f}%, "
        f"sparsity {result.sparsity_before:.3f} -> {result.sparsity_after:.3f} "
        f"({result.granularity}; trained with {result.compile_settings}); saved {output}"
    )
