"""`tfcompress inspect`: what a `.tflite` holds."""

import json

import click

from tfcompress.cli._common import user_errors


@click.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def inspect_command(model, as_json):
    """Show MODEL's inputs/outputs, quantization parameters, and op and dtype histograms."""
    from tfcompress.bench import inspect_model

    info = inspect_model(model)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['path']}  ({info['size_bytes']:,} bytes)")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = f"scale={t['scale']:.6g} zero_point={t['zero_point']}" if t["scale"] else "float"
            click.echo(f"  {kind[:-1]:6s} {t['name']}: {t['dtype']}{t['shape']}  {q}")
    click.echo("  ops:")
    for op, n in info["op_counts"].items():
        click.echo(f"    {op:24s} x{n:<3d} {', '.join(info['op_dtypes'][op])}")
    hist = ", ".join(f"{d} x{n}" for d, n in info["dtype_counts"].items())
    click.echo(f"  op outputs by dtype: {hist}")
    verdict = "yes" if info["fully_int8"] else f"no ({len(info['float_ops'])} float compute ops)"
    click.echo(f"  fully int8: {verdict}")
