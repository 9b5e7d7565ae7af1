"""`tfcompress recipes`: the built-in recipes and every setting a recipe step takes."""

import json

import click

from tfcompress.cli._common import quiet_output, user_errors


@click.group("recipes", invoke_without_command=True)
@click.pass_context
def recipes_command(ctx):
    """List the built-in recipes (`compress --recipe NAME`); `show NAME` prints one as YAML
    to edit into your own, `keys` every setting a step takes."""
    if ctx.invoked_subcommand is not None:
        return
    with quiet_output():  # importing the pipeline starts TensorFlow
        from tfcompress.pipeline._recipe import AUTO, BUILTIN, Recipe

    click.echo(f"{AUTO} (the default):")
    click.echo("  made from the model and the data when a run starts: channel pruning where "
               "channels can go, factorization where large matrices dominate, sparsity where "
               "there are enough weights, then QAT or post-training int8 (the report says "
               "what it chose and why)")
    for name, config in BUILTIN.items():
        click.echo(f"{name}:")
        for i, step in enumerate(Recipe.from_dict(config).steps, start=1):
            extra = ""
            if step.search is not None:
                extra = (" (the most compressed within its share of the budget, else skipped)"
                         if step.search.strategy == "backoff" else
                         f" (the {step.search.objective}-best within budget)")
            click.echo(f"  {i}. {step.describe()}{extra}")


@recipes_command.command("show")
@click.argument("name")
@user_errors
def show_command(name):
    """Print the built-in recipe NAME as YAML (save it, edit it, pass it to --recipe)."""
    from tfcompress.pipeline._recipe import builtin_yaml

    click.echo(builtin_yaml(name), nl=False)


@recipes_command.command("keys")
@click.argument("step", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def keys_command(step, as_json):
    """Every setting a recipe step takes (of STEP, or of every step): default, allowed values
    and meaning. `search: {values: [...], strategy: backoff | all, objective: size | latency}`
    varies the searched one."""
    from tfcompress.pipeline._recipe import settings_table

    rows = settings_table(step)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    kind = None
    for row in rows:
        if row["step"] != kind:
            kind = row["step"]
            click.echo(f"{kind}:")
        searched = " (searched)" if row["searched"] else ""
        click.echo(f"  {row['setting']}{searched} = {json.dumps(row['default'])}: "
                   f"{row['meaning']} Allowed: {row['allowed'].replace('`', '')}.")
