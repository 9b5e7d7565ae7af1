"""`tfcompress export`: a Keras model to a verified `.tflite` (and a microcontroller artifact)."""

import json

import click

from tfcompress._options import EXPORT, QUANTIZATION_MODES
from tfcompress.cli._common import (
    TargetType,
    WeightBitsType,
    auto_weight_bits,
    data_help,
    device_options,
    device_settings,
    input_range_option,
    say,
    unsafe_and_json,
    user_errors,
)


@click.command("export")
@click.argument("model", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .tflite file.")
@click.option("--quantize", "quantization", type=click.Choice(QUANTIZATION_MODES),
              default=EXPORT["quantization"],
              show_default=True, help="Quantization mode.")
@click.option("--data", help="Calibration data for int8/int16x8 (not needed for a model from "
                             f"QAT), also used to check agreement. {data_help}")
@click.option("--target", type=TargetType(), default=EXPORT["target"], show_default=True,
              help="Runtime to verify on: LiteRT (XNNPACK), LiteRT's reference kernels, "
                   "TFLite Micro (writes .h/.cc/_ops.h beside the file; the micro extra), or "
                   "an Arm Ethos-U NPU configuration such as ethos-u55-128 (compiles with Vela, "
                   "writes <stem>_vela.tflite and its .h/.cc/_ops.h; the npu extra).")
@click.option("--integer-io/--float-io", default=None,
              help="int8/int16x8: integer input and output tensors (default: on for tflm).")
@device_options
@click.option("--calibration-samples", default=EXPORT["num_calibration_samples"],
              show_default=True, type=click.IntRange(1),
              help="Images used to calibrate activation ranges.")
@click.option("--allow-float", is_flag=True,
              help="int8/int16x8 of a quantization-aware model: accept ops the converter "
                   "leaves in float (no integer kernel) instead of refusing the file.")
@click.option("--float-layer", "float_layers", multiple=True, metavar="NAME",
              help="Post-training int8: keep this layer (name or pattern) in float. "
                   "Repeatable. 'auto': the most sensitive ones, from a quantize sensitivity "
                   "scan on --data, while the int8 model would lose more than 1 point.")
@click.option("--weight-bits", type=WeightBitsType(), default=None,
              help="Post-training int8 of a float model: 4 for int4 weights (packed; half the "
                   "flash) in every convolution and Dense layer, or per layer, e.g. "
                   "'4,conv1=8' (fnmatch patterns; the bare width is for the rest); auto: the "
                   "layers whose 4-bit weights cost least, within 1 point of int8 (a scan on "
                   "--data). Activation ranges come from --data (percentile 99.99). "
                   "[default: 8]")
@click.option("--per-tensor-weights", is_flag=True,
              help="Post-training int8 of a float model: one weight scale per tensor instead "
                   "of per output channel (for accelerators that require it).")
@click.option("--int16-layer", "int16_layers", multiple=True, metavar="NAME",
              help="Post-training int8 of a float model: run this layer (name or pattern) "
                   "with 16-bit activations, int8 elsewhere (LiteRT's quantizer; the mixed "
                   "extra). Repeatable. 'auto': the layers a quantize sensitivity scan on "
                   "--data picks while int8 would lose more than 1 point. The file's input "
                   "and output are int8.")
@click.option("--equalize", is_flag=True,
              help="Post-training int8 of a float model: cross-layer equalization (pairs of "
                   "layers joined by ReLU, pooling or padding get equal weight ranges per "
                   "channel; the function is unchanged), for per-tensor weights and "
                   "depthwise layers with unequal channels.")
@click.option("--bias-correction", is_flag=True,
              help="Post-training int8 of a float model: take out of each layer's bias the "
                   "mean error its rounded weights cause in its output on --data.")
@click.option("--adaround", is_flag=True,
              help="Post-training int8 of a float model: round each weight up or down as its "
                   "layer's output on --data needs (AdaRound), not to the nearest level; the "
                   "most gain with --weight-bits 4. About 10 s a layer.")
@click.option("--detection-postprocess", is_flag=True,
              help="A detector (with its anchors): end the file with "
                   "TFLite_Detection_PostProcess (decoding and non-maximum suppression), which "
                   "LiteRT and TFLite Micro run; outputs boxes, classes, scores, count.")
@click.option("--score-threshold", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="With --detection-postprocess: lowest score kept [default: 0.05].")
@click.option("--iou-threshold", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="With --detection-postprocess: overlap above which the lower-scored of two "
                   "boxes of a class is dropped [default: 0.5].")
@click.option("--max-detections", type=click.IntRange(1), default=None,
              help="With --detection-postprocess: most detections per image [default: 100].")
@unsafe_and_json(json_help="Print the export report as JSON.")
@input_range_option
@user_errors
def export_command(model, output, quantization, data, target, integer_io, calibration_samples,
                   allow_float, float_layers, int16_layers, weight_bits, per_tensor_weights,
                   equalize, bias_correction, adaround, detection_postprocess, score_threshold,
                   iou_threshold, max_detections, unsafe, as_json, input_range, **device):
    """Convert MODEL (.keras file or SavedModel directory) to a verified .tflite file."""
    from tfcompress.export import to_tflite

    source = model
    if float_layers and int16_layers:
        raise click.UsageError("--int16-layer does not go with --float-layer.")
    chosen = _layers_or_scan(model, data, unsafe, float_layers, "--float-layer", "kept in float")
    sixteen = _layers_or_scan(model, data, unsafe, int16_layers, "--int16-layer",
                              "16-bit activations")
    repair = {"equalize": equalize, "bias_correction": bias_correction, "adaround": adaround}
    calibrated = per_tensor_weights or weight_bits not in (None, 8) or any(repair.values())
    if chosen and calibrated:
        raise click.UsageError("--weight-bits, --per-tensor-weights, --equalize, "
                               "--bias-correction and --adaround do not go with --float-layer.")
    post = _postprocess(detection_postprocess, score_threshold, iou_threshold, max_detections)
    if calibrated:
        model, data = _calibrated(model, data, output, quantization, target,
                                  calibration_samples, weight_bits, per_tensor_weights,
                                  input_range, unsafe, repair)
    say(f"converting {source} to {quantization} for {target} ...")
    report = to_tflite(model, output, quantization, representative_data=data,
                       preprocessing=input_range,
                       integer_io=integer_io, num_calibration_samples=calibration_samples,
                       safe_mode=not unsafe, target=target, allow_float=allow_float,
                       float_layers=chosen or None, detection_postprocess=post,
                       int16_layers=sixteen or None,
                       **device_settings(device))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else str(report))
    if report.npu is not None and not as_json:
        click.echo("\n" + report.npu.op_table())


def _layers_or_scan(model, data, unsafe, names, option, what):
    """The layer names given to `option`, or for `auto` the layers a quantize sensitivity
    scan of `model` on `data` picks while int8 would lose more than 1 point."""
    names = list(names) or None
    if names is None or "auto" not in names:
        return names
    if names != ["auto"]:
        raise click.UsageError(f"{option} auto goes alone.")
    if not data:
        raise click.UsageError(f"{option} auto scans the model on --data (labelled).")
    from tfcompress.debug import sensitivity

    say(f"scanning {model}: every layer quantized alone, on {data}")
    chosen = sensitivity(model, data, "quantize", safe_mode=not unsafe).float_layers()
    say(f"{what}: {', '.join(chosen) or 'none (int8 is within 1 point)'}")
    return chosen


def _calibrated(model, data, output, quantization, target, samples, weight_bits, per_tensor,
                input_range, unsafe, repair):
    """The float model at `model` as a quantization-aware copy with calibrated activation
    ranges and the weight widths and scales asked for (post-training), and its data."""
    from tfcompress import _loading, _training
    from tfcompress.export._export import check_outputs
    from tfcompress.quantization import calibrate_ranges, is_quantize_aware, quantize_aware

    asked = {"--weight-bits": weight_bits not in (None, 8), "--per-tensor-weights": per_tensor,
             **{f"--{name.replace('_', '-')}": on for name, on in repair.items()}}
    what = next(flag for flag, on in asked.items() if on)
    if quantization != "int8":
        raise click.UsageError(f"{what} goes with --quantize int8, got {quantization}.")
    if not data:
        raise click.UsageError(f"{what} calibrates activation ranges on --data.")
    check_outputs(output, target, model, data)
    keras_model = _loading.load_keras_model(model, safe_mode=not unsafe, compile=False)
    if is_quantize_aware(keras_model):
        raise click.UsageError(
            f"{model} is quantization-aware: its weight widths and scales were fixed when it "
            f"was built (quantize_aware(weight_bits=..., per_channel_weights=...)); {what} "
            "applies to a float model.")
    options = {"weight_bits": 8 if weight_bits in (None, "auto") else weight_bits,
               "per_channel_weights": not per_tensor}
    quantize_aware(keras_model, target=target, **options)  # one line before any work
    ds = _training.load_for(keras_model, data, preprocessing=input_range)
    if weight_bits == "auto":
        options["weight_bits"] = auto_weight_bits(keras_model, ds, weight_bits) or 8
        quantize_aware(keras_model, target=target, **options)  # the scan's choice, checked
    say(f"calibrating {model} on {samples} images of {data}")
    return calibrate_ranges(keras_model, ds, num_samples=samples, **options, **repair), ds


def _postprocess(asked: bool, score: float | None, iou: float | None, most: int | None):
    """The post-processing the options ask for (`False` without the flag)."""
    given = {k: v for k, v in (("score_threshold", score), ("iou_threshold", iou),
                               ("max_detections", most)) if v is not None}
    if not asked:
        if given:
            raise click.UsageError(f"--{next(iter(given)).replace('_', '-')} goes with "
                                   "--detection-postprocess.")
        return False
    from tfcompress.detection import Postprocess

    if "max_detections" in given:
        given["per_class"] = given["max_detections"]
    return Postprocess(**given)
