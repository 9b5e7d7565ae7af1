"""`tfcompress qat`: quantization-aware fine-tuning, exported as an integer-only `.tflite`."""

import json

import click

from tfcompress._options import QAT
from tfcompress.cli._common import (
    TargetType,
    WeightBitsType,
    auto_weight_bits,
    data_help,
    say,
    training_command,
    training_options,
)


@click.command("qat")
@click.argument("model", type=click.Path(exists=True))
@click.option("--data", required=True, help=f"Training data. {data_help}")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the int8 .tflite file.")
@training_options(QAT, "Quantization-aware fine-tuning epochs.")
@click.option("--keras-output", type=click.Path(dir_okay=False),
              help="Also save the quantization-aware Keras model (.keras).")
@click.option("--float-layer", "float_layers", multiple=True, metavar="NAME",
              help="Keep this layer (name or pattern) in float, in training and in the file. "
                   "Repeatable. 'auto': the most sensitive ones, from a quantize sensitivity "
                   "scan, while int8 would lose more than 1 point.")
@click.option("--weight-bits", type=WeightBitsType(), default=None,
              help="4: int4 weights (packed in the file; half the flash of int8) in every "
                   "convolution and Dense layer; or per layer, e.g. '4,conv1=8' "
                   "(fnmatch patterns; the bare width is for the rest); auto: the layers whose "
                   "4-bit weights cost least, within 1 point of int8 (a scan on --data). "
                   "[default: 8]")
@click.option("--target", type=TargetType(), default="litert", show_default=True,
              help="Where the file runs (as for export). For an Arm Ethos-U target "
                   "(ethos-u55-128, ...), the layers Vela would leave to the CPU are named "
                   "before training, and the file is compiled with Vela.")
@click.option("--allow-cpu-ops", is_flag=True,
              help="Ethos-U: accept ops Vela leaves to the CPU instead of refusing the file.")
@training_command()
def qat_command(model, data, output, epochs, batch_size, learning_rate, keras_output,
                float_layers, weight_bits, target, allow_cpu_ops, unsafe, as_json,
                input_range):
    """Fine-tune MODEL (.keras) with simulated int8 and export it as an integer-only .tflite."""
    import os

    from tfcompress import _io, _loading, _targets, _training
    from tfcompress.bench import benchmark
    from tfcompress.export import to_tflite
    from tfcompress.export._export import check_outputs
    from tfcompress.quantization import float_layer_names, train_quantized

    check_outputs(output, target, model, data)
    if allow_cpu_ops and not _targets.is_npu(target):
        raise click.BadParameter("goes with an Ethos-U --target.", param_hint="--allow-cpu-ops")
    if keras_output:
        _io.check_not_input(keras_output, model, data)
        if os.path.realpath(keras_output) == os.path.realpath(output):
            raise click.BadParameter("the Keras model and the .tflite file need two different "
                                     "paths.", param_hint="--keras-output")
        if not keras_output.endswith(".keras"):
            raise click.BadParameter(f"expected a .keras file name, got {keras_output!r}.",
                                     param_hint="--keras-output")
    keras_model = _loading.load_keras_model(model, safe_mode=not unsafe)
    if weight_bits not in (None, "auto"):
        from tfcompress.quantization import quantize_aware

        quantize_aware(keras_model, weight_bits=weight_bits, target=target)  # checks, no data
    ds = _training.load_for(keras_model, data, preprocessing=input_range)
    weight_bits = auto_weight_bits(keras_model, ds, weight_bits)
    bits = {} if weight_bits is None else {"weight_bits": weight_bits}
    say(f"quantization-aware training of {model} for {epochs} epoch(s) ...")
    chosen = list(float_layers) or None
    if chosen == ["auto"]:
        from tfcompress.debug import sensitivity

        say("scanning every layer quantized alone on the held-out images")
        chosen = sensitivity(keras_model, ds, "quantize").float_layers() or None
        say(f"kept in float: {', '.join(chosen or []) or 'none (int8 is within 1 point)'}")
    elif chosen and "auto" in chosen:
        raise click.BadParameter("auto goes alone.", param_hint="--float-layer")
    q, result = train_quantized(keras_model, ds, epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate, verbose=0 if as_json else 2,
                                float_layers=chosen, target=target, **bits)
    kept = float_layer_names(q)  # quantize_aware warned of those it kept unasked
    npu = {"allow_cpu_ops": True} if allow_cpu_ops else {}
    report = to_tflite(q, output, "int8", representative_data=ds if kept else None,
                       target=target, **npu)
    if keras_output:
        _io.save_model_atomic(q, keras_output)
    lite = benchmark(output, ds, runs=20)
    info = {**result.to_dict(), "accuracy_int8_litert": lite.accuracy,
            "integer_only": report.integer_only, "size_bytes": report.size_bytes,
            "weight_bits": {str(k): v for k, v in report.weight_bits.items()},
            "output": output, "target": target,
            "npu": None if report.npu is None else report.npu.to_dict()}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(
        f"accuracy: float {100 * result.accuracy_float:.2f}%, QAT Keras "
        f"{100 * result.accuracy_qat:.2f}%, int8 LiteRT {100 * lite.accuracy:.2f}%; "
        f"{report.size_bytes:,} bytes, integer-only: {report.integer_only}; saved {output}"
    )
    if report.weight_bits.get(4):
        click.echo(report.weights_line)
    if report.npu is not None:
        click.echo(str(report.npu))
