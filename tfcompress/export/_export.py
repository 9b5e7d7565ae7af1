"""`to_tflite`: a Keras model to a verified `.tflite` file, in named stages: check the
arguments, open the model and its data, plan the quantization, convert, verify (integer ops,
the device's own measurement, agreement on the target's runtime), and write the file with
whatever the target adds beside it, all of it or nothing. Targets are declared once, in
`tfcompress._targets`."""

import dataclasses
import importlib
import os
from typing import Any

import numpy as np

from tfcompress import _io, _legacy, _loading, _metadata, _options, _targets, _tflite
from tfcompress._targets import Target
from tfcompress.data import Dataset
from tfcompress.detection._anchors import anchors_of
from tfcompress.export._convert import (
    INTEGER_MODES,
    calibration_arrays,
    convert,
    expected_input_shape,
    fixed_batch,
    warn_if_out_of_range,
)
from tfcompress.export._fixups import share_zero_points
from tfcompress.export._report import ExportReport
from tfcompress.export._verify import agreement, check_float_ops

QUANTIZATION_MODES = _options.QUANTIZATION_MODES


def to_tflite(
    model: Any,
    path: "str | os.PathLike",
    quantization: str = _options.EXPORT["quantization"],
    representative_data: Any = None,
    *,
    integer_io: bool | None = None,
    num_calibration_samples: int = _options.EXPORT["num_calibration_samples"],
    safe_mode: bool = True,
    target: str = _options.EXPORT["target"],
    verify_data: Any = None,
    max_flash: int | None = None,
    max_ram: int | None = None,
    class_names: "list[str] | tuple[str, ...] | None" = None,
    allow_float: bool = False,
    float_layers: "list[str] | tuple[str, ...] | None" = None,
    preprocessing: Any = None,
    system_config: str | None = None,
    memory_mode: str | None = None,
    allow_cpu_ops: bool = False,
    max_latency_ms: float | None = None,
    max_sram: int | None = None,
    detection_postprocess: Any = False,
    equalize: bool = False,
    bias_correction: bool = False,
    adaround: bool = False,
    int16_layers: "list[str] | tuple[str, ...] | None" = None,
) -> ExportReport:
    """Converts a Keras 3 model to a `.tflite` file and verifies it in the LiteRT interpreter.

    `int8` is full-integer quantization with builtin int8 ops only; `int16x8` keeps activations
    in int16 and weights in int8; `dynamic` stores int8 weights but computes in float;
    `float16` stores float16 weights. A model from `quantize_aware` exports to `int8` with the
    ranges it learned, without calibration data. After writing, the file is opened in LiteRT
    and, for `int8`/`int16x8`, any op still computing in float is an error naming the op and the
    layer it came from. The file is written atomically and the input is never overwritten.

    Args:
        model: A `keras.Model`, a path to a `.keras` file, or a SavedModel directory.
        path: Where to write the `.tflite` file.
        quantization: One of `"float32"`, `"float16"`, `"dynamic"`, `"int8"`, `"int16x8"`.
            Defaults to `"int8"`.
        representative_data: Calibration images for `int8`/`int16x8`: an array, an `(x, y)`
            tuple, a `Dataset`, a loader name or path, or an iterable of batches. Defaults to
            `None` (an error for the modes that need it, except `int8` of a quantization-aware
            model).
        integer_io: For `int8`/`int16x8`, make the model's input and output integer too (no
            QUANTIZE/DEQUANTIZE at the edges). Defaults to `None`: `True` for `target="tflm"`,
            else `False`.
        num_calibration_samples: How many images calibrate the activation ranges. Defaults to
            `200`.
        safe_mode: Keras' safe mode when `model` is a `.keras` path. Defaults to `True`.
        target: The runtime the file is verified on: `"litert"` (LiteRT with XNNPACK),
            `"litert-reference"` (LiteRT's reference kernels), `"tflm"` (TensorFlow Lite for
            Microcontrollers, the `micro` extra), or an Arm Ethos-U NPU configuration that
            Vela compiles for (`"ethos-u55-128"`, `"ethos-u85-256"`...: the `npu` extra).
            For `"tflm"` the batch is fixed to 1, and C++ sources are written beside the
            file: `<stem>.h` and `<stem>.cc` (the model as an aligned array, the arena size
            measured in TFLite Micro plus headroom, input and output scale and zero point,
            class names) and `<stem>_ops.h` (the exact op list as a
            `tflite::MicroMutableOpResolver`). An Ethos-U target makes the file as for
            `"tflm"`, checks it on LiteRT's reference kernels (what the NPU must compute),
            compiles it with Vela and writes `<stem>_vela.tflite` beside it, with the C++
            files of the compiled model (its op resolver registers the Ethos-U op and any
            op left to the CPU; the arena is the one Vela planned, plus headroom). The
            report's `npu` says where every op runs and Vela's estimates. Defaults to
            `"litert"`.
        verify_data: Images on which the top-1 agreement between the Keras model and the file
            on `target` is measured (at most 200). Defaults to `None`: the representative
            data, if any.
        max_flash: With `"tflm"`, refuse a model larger than this many bytes; with an
            Ethos-U target, a compiled model larger than this. Defaults to `None`.
        max_ram: With `"tflm"`, refuse a model whose arena (with headroom) is larger than
            this many bytes. Defaults to `None`.
        class_names: Class names for the C header. Defaults to `None`: those of a `Dataset`
            passed as data, else none.
        allow_float: For `int8`/`int16x8` of a quantization-aware model, accept the ops the
            converter leaves in float (ops with no integer kernel) instead of refusing the
            file. The report lists them and `integer_only` is `False`. Defaults to `False`.
        float_layers: For a post-training `int8` export: Keras layer names (`fnmatch`
            patterns) whose ops stay in float, between DEQUANTIZE and QUANTIZE; everything
            else is int8. Use it for the few layers that lose the most (`tfcompress debug`
            names them; `tfcompress.debug.sensitivity(model, data, "quantize")
            .float_layers()` picks them within an accuracy budget). Defaults to `None`.
        preprocessing: For data given as a name or path: what its images become for the
            model (`"0-1"`, `"-1-1"`, `"0-255"` or a `tfcompress.data.Preprocessing`).
            Defaults to `None`: read from the model's first `Rescaling`/`Normalization`
            layer, else [0, 1]. Calibration images far outside the model's range are warned
            about.
        system_config: With an Ethos-U target, the system configuration of Vela's
            `Arm/vela.ini` (clocks and memories). Defaults to `None`: Vela's default for
            the accelerator (named in the report).
        memory_mode: With an Ethos-U target, the memory mode of Vela's `Arm/vela.ini`
            (where weights and feature maps live). Defaults to `None`: Vela's default.
        allow_cpu_ops: With an Ethos-U target, accept ops that Vela leaves to the CPU
            instead of refusing the file (the report names them with Vela's reason).
            Defaults to `False`.
        max_latency_ms: With an Ethos-U target, refuse a model whose estimated inference
            time is over this. Defaults to `None`.
        max_sram: With an Ethos-U target, refuse a model that uses more SRAM than this many
            bytes. Defaults to `None`.
        detection_postprocess: For a detector (a model that carries
            `tfcompress.detection.Anchors`): end the file with `TFLite_Detection_PostProcess`
            (decoding against the anchors, per-class non-maximum suppression), which LiteRT
            and TFLite Micro run. `True` for the settings of
            `tfcompress.detection.Postprocess()`, or a `Postprocess` (score and IoU
            thresholds, most detections). The file's four float outputs are boxes
            `[ymin, xmin, ymax, xmax]` (normalized), classes, scores and their count; the
            batch is 1; everything before the op is integer in an int8 export. The agreement
            is the share of images with the same detections as the Keras model decoded by
            the same settings. Defaults to `False`.
        equalize: For a post-training `int8` export of a float model: cross-layer
            equalization first (where a layer's output reaches one next weight layer through
            ReLU, pooling or padding, the pair's channels are rescaled to equal weight
            ranges; the function is unchanged), then activation ranges from statistics of
            `representative_data` (`tfcompress.quantization.calibrate_ranges`, percentile
            99.99). Defaults to `False`.
        bias_correction: For a post-training `int8` export of a float model: each layer's
            bias takes out the mean error its rounded weights cause in its output on the
            calibration images (ranges as for `equalize`). Defaults to `False`.
        adaround: For a post-training `int8` export of a float model: each weight is rounded
            up or down as its layer's output on the calibration images needs (AdaRound,
            fitted layer by layer on the inputs each layer gets in the quantized model)
            instead of to the nearest level; the most gain with 4-bit weights. About 10 s
            a layer on 2 CPU cores (1,000 fitting steps each). Defaults to `False`.
        int16_layers: For a post-training `int8` export of a float model: Keras layer names
            (`fnmatch` patterns) whose ops run with 16-bit activations and int8 weights
            (a16w8), everything else int8, through LiteRT's quantizer (the `mixed` extra);
            QUANTIZE ops convert at the borders. The file's input and output are int8 and
            its batch is fixed (the model's, else 1); LiteRT, its reference kernels and
            TFLite Micro run it. Use it for the layers that lose the most to int8, instead
            of keeping them in float (`tfcompress.debug.sensitivity(model, data,
            "quantize").float_layers()` picks them). Defaults to `None`.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: For an unknown mode, missing calibration data, a model that cannot be
            loaded or converted, an output that would overwrite the input, or an integer model
            that still computes in float.

    Examples:
        >>> import tempfile, tfcompress as tfc
        >>> ds = tfc.data.load("mnist")
        >>> model = tfc.reference.reference_cnn()
        >>> out = tempfile.mkdtemp() + "/model.tflite"
        >>> report = to_tflite(model, out, "int8", representative_data=ds)
        >>> report.integer_only
        True
    """
    device_options = {k: v for k, v in dict(
        max_flash=max_flash, max_ram=max_ram, system_config=system_config,
        memory_mode=memory_mode, allow_cpu_ops=allow_cpu_ops or None,
        max_latency_ms=max_latency_ms, max_sram=max_sram).items() if v is not None}
    spec, integer_io, float_layers = _check_arguments(
        quantization, target, integer_io, float_layers, num_calibration_samples,
        device_options)
    model = _open(model, path, spec, safe_mode, representative_data, verify_data)
    if not isinstance(model, str):
        from tfcompress.quantization._transform import check_weight_bits

        check_weight_bits(model, quantization, target)
    post = _postprocess_settings(detection_postprocess, model, float_layers)
    if not isinstance(model, str):  # a folder or built-in set is read as the model takes it
        from tfcompress._training import load_for

        representative_data, verify_data = (
            load_for(model, d, preprocessing=preprocessing)
            if isinstance(d, (str, os.PathLike)) else d
            for d in (representative_data, verify_data))
    if equalize or bias_correction or adaround:
        model = _repaired(model, quantization, representative_data, num_calibration_samples,
                          float_layers, equalize, bias_correction, adaround)
    workdir = os.path.dirname(os.path.abspath(path))
    if int16_layers:
        calib = _mixed_calibration(model, quantization, representative_data, float_layers,
                                   post, target, num_calibration_samples)
        os.makedirs(workdir, exist_ok=True)
        from tfcompress.export._mixed import quantize_mixed

        content = quantize_mixed(
            convert(model, "float32", None, False, workdir, batch=fixed_batch(model, spec) or 1),
            calib, [int16_layers] if isinstance(int16_layers, str) else list(int16_layers))
    else:
        model, calib, float_layers = _plan(model, quantization, representative_data,
                                           allow_float, float_layers, num_calibration_samples)
        os.makedirs(workdir, exist_ok=True)
        content = convert(model, quantization, calib, integer_io, workdir,
                          batch=fixed_batch(model, spec), float_layers=float_layers,
                          postprocess=None if post is None else (post, anchors_of(model)))
    check = verify_data if verify_data is not None else representative_data
    names = class_names if class_names is not None or not isinstance(check, Dataset) \
        else check.class_names
    device = _device(spec)
    anchors = None if isinstance(model, str) else anchors_of(model)
    if anchors is not None:  # a detector: the file alone can be decoded and scored
        content = _metadata.add_anchors(content, anchors)
    content = _metadata.add(content, file_preprocessing(model, preprocessing, check), names,
                            _channels(model), pack_labels=device is None)
    if spec.shared_zero_points and device is not None:  # no label archive after the model
        content = share_zero_points(content)
    summary = _tflite.summarize(_tflite.interpreter(content))
    float_ops = check_float_ops(model, summary, quantization, float_layers, allow_float)
    measured = None if device is None else device.measure(content, target, summary,
                                                          **device_options)
    agrees, samples = None, 0
    if check is not None and not isinstance(model, str):
        agrees, samples = agreement(model, content, check, spec, postprocess=post)
    measured = _write(path, content, device, measured, summary, names)
    return ExportReport(
        path=os.fspath(path), quantization=quantization, size_bytes=len(content),
        inputs=summary.inputs, outputs=summary.outputs, op_counts=summary.op_counts(),
        float_ops=float_ops,
        integer_only=(summary.is_integer_only(quantization)
                      if quantization in INTEGER_MODES else False),
        calibration_samples=0 if calib is None else len(calib), target=target,
        agreement=agrees, agreement_samples=samples,
        agreement_kind="detections" if anchors is not None else "top-1",
        weight_bits=_tflite.weight_bits(content),
        int16_ops=sum(1 for o in summary.ops if o.op not in ("QUANTIZE", "DEQUANTIZE")
                      and "int16" in o.output_dtypes),
        **{"npu" if _targets.is_npu(target) else "micro": measured})


def _post_training_only(asked: str, model: Any, quantization: str, float_layers: Any,
                        data: Any) -> None:
    """One line where `asked` (an option of post-training int8 of a float Keras model, on
    representative data) meets an export it does not go with."""
    from tfcompress.quantization import is_quantize_aware

    if quantization != "int8":
        raise ValueError(f"{asked} applies to an 'int8' export, got {quantization!r}.")
    if isinstance(model, str) or is_quantize_aware(model):
        raise ValueError(f"{asked} applies to post-training quantization of a float Keras "
                         "model; a quantization-aware model is fixed by its training (and a "
                         "SavedModel cannot be rewritten).")
    if float_layers:
        raise ValueError(f"{asked} does not go with float_layers.")
    if data is None:
        raise ValueError(f"{asked} measures the model on representative_data (on the command "
                         "line --data); pass a few hundred training images.")


def _mixed_calibration(model: Any, quantization: str, data: Any, float_layers: Any,
                       post: Any, target: str, samples: int) -> np.ndarray:
    """The calibration images of an export with 16-bit layers, after one line for anything
    that does not go with it."""
    _post_training_only("int16_layers", model, quantization, float_layers, data)
    if post is not None:
        raise ValueError("int16_layers does not go with detection_postprocess.")
    if _targets.is_npu(target):
        raise ValueError(f"int16_layers runs on litert, litert-reference and tflm; {target} "
                         "takes one activation width (export int8 or int16x8).")
    calib = calibration_arrays(data, samples)
    warn_if_out_of_range(model, calib)
    return calib


def _repaired(model: Any, quantization: str, data: Any, samples: int, float_layers: Any,
              equalize: bool, bias_correction: bool, adaround: bool) -> Any:
    """The float `model` equalized, rounded by AdaRound and/or bias-corrected, as a
    calibrated quantization-aware model; one line where the export cannot take that route."""
    from tfcompress.quantization import calibrate_ranges

    asked = "equalize" if equalize else "bias_correction" if bias_correction else "adaround"
    _post_training_only(asked, model, quantization, float_layers, data)
    return calibrate_ranges(model, data, num_samples=samples, equalize=equalize,
                            bias_correction=bias_correction, adaround=adaround)


def _postprocess_settings(asked: Any, model: Any, float_layers: Any) -> Any:
    """The `Postprocess` to end the file with, or None; one line for a model without anchors
    or settings that do not go with it."""
    from tfcompress.detection import Postprocess

    if asked is False or asked is None:
        return None
    if asked is not True and not isinstance(asked, Postprocess):
        raise TypeError("detection_postprocess must be True, False or a "
                        f"tfcompress.detection.Postprocess, got {type(asked).__name__}.")
    if isinstance(model, str) or anchors_of(model) is None:
        raise ValueError(
            "detection_postprocess needs a detector that carries its anchors (a model ending "
            "in tfcompress.detection.Anchors), so that the op can decode its boxes; this "
            "model has none. Add an Anchors layer after its head, or export without "
            "--detection-postprocess.")
    if float_layers:
        raise ValueError("detection_postprocess does not go with float_layers: export the "
                         "detector without one of them.")
    return Postprocess() if asked is True else asked


def _check_arguments(quantization: str, target: str, integer_io: bool | None,
                     float_layers: Any, num_calibration_samples: int,
                     device_options: dict) -> tuple[Target, bool, list | None]:
    """The target, whether the file's input and output are integers, and the float layers
    as a list, after checking every argument that needs no model (one line each)."""
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            f"Unknown quantization {quantization!r}; expected one of {QUANTIZATION_MODES}."
        )
    spec = _targets.get(target)
    misplaced = [k for k in device_options if k not in spec.device_options]
    if misplaced:
        raise ValueError(f"{misplaced[0]} applies to {_targets.takers(misplaced[0])}, not "
                         f"{target!r}.")
    if spec.quantizations is not None and quantization not in spec.quantizations:
        raise ValueError(
            f"Target {target!r} runs integer models; {quantization!r} would run on its CPU. "
            f"Export as one of {spec.quantizations} (a float model is calibrated on --data, "
            "or trained with quantize_aware first).")
    _tflite.check_target(target)
    if _targets.is_npu(target):
        from tfcompress import _vela

        _vela.check(target, device_options.get("system_config"),
                    device_options.get("memory_mode"))
    if integer_io is None:
        integer_io = spec.integer_io and quantization in INTEGER_MODES
    if integer_io and quantization not in INTEGER_MODES:
        raise ValueError(
            f"integer_io applies to 'int8' and 'int16x8' exports, not {quantization!r}."
        )
    if float_layers is not None:
        float_layers = [float_layers] if isinstance(float_layers, str) else list(float_layers)
        if quantization != "int8" or not all(isinstance(p, str) for p in float_layers):
            raise ValueError("float_layers takes layer names for a post-training 'int8' export, "
                             f"got {float_layers!r} with {quantization!r}.")
    if num_calibration_samples < 1:
        raise ValueError(f"num_calibration_samples must be >= 1, got {num_calibration_samples}.")
    return spec, integer_io, float_layers


def _open(model: Any, path: Any, spec: Target, safe_mode: bool, representative_data: Any,
          verify_data: Any) -> Any:
    """The Keras model (loaded from a path; a SavedModel directory stays a path), after
    checking that no output would land on an input and the model's weights are finite."""
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    source = model if isinstance(model, (str, os.PathLike)) else None
    _io.check_not_input(path, source, representative_data)
    device = _device(spec)
    if device is not None:
        device.check_outputs(path, source, representative_data, verify_data)
    if source is not None:
        if _io.is_saved_model_dir(source):
            return os.fspath(source)
        model = _loading.load_keras_model(source, safe_mode=safe_mode, compile=False)
    elif not hasattr(model, "export"):
        raise TypeError(
            "model must be a keras.Model, a .keras path or a SavedModel directory, got "
            f"{type(model).__name__}."
        )
    from tfcompress._training import check_finite_weights

    check_finite_weights(model)  # a NaN model can crash the LiteRT interpreter
    return model


def _plan(model: Any, quantization: str, data: Any, allow_float: bool, float_layers: Any,
          num_samples: int) -> tuple[Any, np.ndarray | None, list | None]:
    """The model to convert, its calibration images (None where it needs none) and the
    layers kept in float. A quantization-aware model with float layers is converted as
    post-training int8 of its trained weights."""
    learned, kept_float = _check_quantize_aware(model, quantization, allow_float, float_layers)
    if kept_float:
        # The converter's QAT path would quantize these layers between their neighbours'
        # fake-quant points: export the trained weights as post-training int8 instead.
        if data is None:
            raise ValueError(
                f"The quantization-aware model keeps {', '.join(kept_float)} in float; its int8 "
                "export keeps them float through post-training quantization of the trained "
                "weights, which needs representative_data (on the command line --data).")
        from tfcompress.quantization import strip_fake_quant
        from tfcompress.quantization._transform import four_bit_layers

        four = four_bit_layers(model)
        if four:
            raise ValueError(
                f"The quantization-aware model keeps {', '.join(kept_float)} in float, which "
                "its int8 export does through post-training quantization, and that would "
                f"lose the 4-bit weights of {four[0]!r}. Give the float layers' neighbours 8 "
                "bits or keep no layer in float.")
        model, learned, float_layers = strip_fake_quant(model), None, kept_float
    if quantization not in INTEGER_MODES or learned == quantization:
        return model, None, float_layers
    if data is None:
        raise ValueError(
            f"{quantization} export needs representative_data to calibrate activation "
            "ranges: pass a few hundred training images (an array, a Dataset or a data "
            "path; on the command line --data), or train the model with "
            "tfcompress.quantization.quantize_aware first (int8 then needs no data)."
        )
    calib = calibration_arrays(data, num_samples)
    warn_if_out_of_range(model, calib)
    expected = expected_input_shape(model)
    if expected is not None and tuple(calib.shape[1:]) != expected:
        raise ValueError(
            f"The model expects images of shape {expected}, but the representative data "
            f"has shape {tuple(calib.shape[1:])}. Pass data the model was trained on."
        )
    return model, calib, float_layers


def _check_quantize_aware(model: Any, quantization: str, allow_float: bool, float_layers: Any
                          ) -> tuple[str | None, list[str]]:
    """For a quantization-aware model: the mode it learned ranges for and the layers it keeps
    in float; one line where the export asks for what the model cannot give."""
    from tfcompress.quantization import (
        check_ranges_learned,
        float_layer_names,
        is_quantize_aware,
    )
    from tfcompress.quantization._transform import activation_bits

    qat = not isinstance(model, str) and is_quantize_aware(model)
    if qat:
        check_ranges_learned(model)
    learned = {8: "int8", 16: "int16x8"}.get(activation_bits(model)) if qat else None
    if quantization in INTEGER_MODES and learned not in (None, quantization):
        raise ValueError(
            f"The quantization-aware model simulates {learned} but the export asks for "
            f"{quantization}. Export it as {learned!r}, or build it with quantize_aware(..., "
            f"activation_bits={16 if quantization == 'int16x8' else 8}).")
    if allow_float and not (qat and quantization in INTEGER_MODES):
        raise ValueError(
            "allow_float applies to the int8/int16x8 export of a quantization-aware model; for "
            "a post-training export, name the layers to keep in float with float_layers.")
    if float_layers and qat:
        raise ValueError(
            "float_layers applies to post-training int8 of a float model; a "
            "quantization-aware model keeps the layers it was built with in float: "
            "quantize_aware(model, float_layers=[...]).")
    return learned, (float_layer_names(model) if qat and quantization == "int8" else [])


def file_preprocessing(model: Any, preprocessing: Any, data: Any) -> Any:
    """What the file's metadata records as its input normalization: `preprocessing` when
    given, else the data's (a loaded `Dataset`: the range it was read in), else the model's
    first `Rescaling`/`Normalization`; None when none of them says (arrays of unknown range
    and a model with no such layer)."""
    from tfcompress.data import Preprocessing
    from tfcompress.data._preprocess import as_preprocessing

    asked = as_preprocessing(preprocessing)
    if asked is not None:
        return asked
    if isinstance(data, Dataset) and data.preprocessing is not None:
        return data.preprocessing
    if not isinstance(model, str):
        found = Preprocessing.from_model(model)
        if found is not None:
            return found
    if isinstance(data, Dataset) and data.preprocessing is None and data.name in (
            "mnist", "shapes"):
        return Preprocessing("0-1", source="the built-in set's [0, 1] images")
    return None


def _channels(model: Any) -> int:
    shape = getattr(model, "inputs", None) and tuple(model.inputs[0].shape)
    return int(shape[-1]) if shape and len(shape) == 4 and shape[-1] else 3


def check_outputs(path: "str | os.PathLike", target: str, *inputs: object) -> None:
    """Raises, before any work, unless the file for `target` and what the target writes
    beside it can be written at `path` without overwriting an input or a file tfcompress did
    not write."""
    _io.check_not_input(path, *inputs)
    device = _device(_targets.get(target))
    if device is not None:
        device.check_outputs(path, *inputs)


def _device(spec: Target) -> Any:
    """The module that measures files on the target's device and writes its companion files
    (`check_outputs`, `measure`, `files`), or None."""
    return None if spec.device is None else importlib.import_module(
        f"tfcompress.export.{spec.device}")


def _write(path: Any, content: bytes, device: Any, measured: Any,
           summary: "_tflite.GraphSummary", class_names: Any) -> Any:
    """Writes the file and the device's companion files as one set, all or none; returns the
    device's measurement with the files it wrote."""
    files = {os.fspath(path): content}
    if device is not None:
        extra = device.files(content, path, measured, summary, class_names)
        files.update(extra)
        measured = dataclasses.replace(measured, files=tuple(extra))
    _io.write_all_atomic(files)
    return measured
