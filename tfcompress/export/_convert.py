"""Keras 3 model -> verified `.tflite`, in every quantization mode the converter offers."""

import dataclasses
import os
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfcompress import _io, _legacy, _loading, _options, _tflite
from tfcompress.data import Dataset, Part, as_arrays
from tfcompress.data._parts import is_stream
from tfcompress.export import _micro
from tfcompress.export._fixups import widen_int16_biases
from tfcompress.export._micro import MicroReport
from tfcompress.quantization import check_ranges_learned, float_layer_names, is_quantize_aware

QUANTIZATION_MODES = _options.QUANTIZATION_MODES
_NEEDS_CALIBRATION = ("int8", "int16x8")


@dataclass(frozen=True)
class ExportReport:
    """What `to_tflite` wrote and what the LiteRT interpreter found in it."""

    path: str
    quantization: str
    size_bytes: int
    inputs: tuple[_tflite.TensorInfo, ...]
    outputs: tuple[_tflite.TensorInfo, ...]
    op_counts: dict[str, int] = field(default_factory=dict)
    float_ops: tuple[_tflite.OpInfo, ...] = ()
    integer_only: bool = False
    calibration_samples: int = 0
    target: str = "litert"
    agreement: float | None = None
    agreement_samples: int = 0
    micro: MicroReport | None = None

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "runtime": _tflite.TARGET_NAMES[self.target],
            "agreement": self.agreement,
            "agreement_samples": self.agreement_samples,
            "micro": None if self.micro is None else self.micro.to_dict(),
            "path": self.path,
            "quantization": self.quantization,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "op_counts": dict(self.op_counts),
            "float_ops": [o.to_dict() for o in self.float_ops],
            "integer_only": self.integer_only,
            "calibration_samples": self.calibration_samples,
        }

    def __str__(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in self.op_counts.items())
        kind = "integer-only" if self.integer_only else "has float compute"
        text = (
            f"{self.path}: {self.quantization}, {self.size_bytes:,} bytes, {kind}; "
            f"input {self.inputs[0].dtype}{list(self.inputs[0].shape)}, output "
            f"{self.outputs[0].dtype}; ops: {ops}"
        )
        if self.agreement is not None:
            text += (f"\ntop-1 agreement with the Keras model in "
                     f"{_tflite.TARGET_NAMES[self.target]}: {100 * self.agreement:.2f} % of "
                     f"{self.agreement_samples} images")
        if self.micro is not None:
            text += f"\n{self.micro}\nwrote {', '.join(self.micro.files)}"
        return text


def _calibration_arrays(data: Any, num_samples: int) -> np.ndarray:
    """Turns any accepted representative data into an array of at most `num_samples` inputs
    (images, or the inputs of a model that does not take images, e.g. audio frames)."""
    if isinstance(data, np.ndarray) and data.ndim != 4:
        x = np.asarray(data, dtype=np.float32)
        if x.ndim < 2 or not np.isfinite(x).all():
            raise ValueError(f"representative_data must be a batch of finite inputs, got an "
                             f"array of shape {x.shape}.")
    elif isinstance(data, (np.ndarray, tuple, str, os.PathLike, Dataset, Part)) or (
            is_stream(data) and not hasattr(data, "element_spec")
            and not isinstance(data, types.GeneratorType)):  # a generator is read once below
        x, _ = as_arrays(data, split_name="train", limit=num_samples)
    else:  # an iterable of batches, e.g. a tf.data.Dataset of images or (images, labels)
        batches, count = [], 0
        for batch in data:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            batch = np.asarray(batch, dtype=np.float32)
            batches.append(batch)
            count += len(batch)
            if count >= num_samples:
                break
        if not batches:
            raise ValueError("representative_data yielded no batches.")
        x = np.concatenate(batches)
    return np.asarray(x[:num_samples], dtype=np.float32)


def _configure(converter: Any, mode: str, calib: np.ndarray | None, integer_io: bool) -> None:
    import tensorflow as tf

    if mode == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        pass
    elif calib is None:  # a quantization-aware model: the ranges come from its fake-quant
        io_type = tf.int8
        if mode == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            io_type = tf.int16
        if integer_io:
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    else:

        def representative():
            from tfcompress._progress import track

            for i in track(range(len(calib)), len(calib), "calibrating activation ranges"):
                yield [calib[i : i + 1]]

        converter.representative_dataset = representative
        if mode == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = tf.int8
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            io_type = tf.int16
        if integer_io:
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type


def _convert(model: Any, mode: str, calib: np.ndarray | None, integer_io: bool,
             workdir: str, batch: int | None = None, float_layers: Any = None) -> bytes:
    import tensorflow as tf

    # Beside the output, not in the system temp folder: a killed run leaves nothing behind
    # where the user would never look.
    with _io.scratch_folder(workdir, ".tfcompress-export-") as tmp:
        if isinstance(model, str):  # a SavedModel directory
            saved = model
        else:
            saved = os.path.join(tmp, "saved_model")
            signature = None
            if batch is not None:  # a fixed batch: no SHAPE/STRIDED_SLICE/PACK for reshapes
                import keras

                specs = [keras.InputSpec(shape=(batch, *t.shape[1:]), dtype=t.dtype)
                         for t in model.inputs]
                signature = specs if len(specs) == 1 else [specs]
            model.export(saved, format="tf_saved_model", verbose=False,
                         input_signature=signature)
        try:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        except Exception as e:  # noqa: BLE001 (a corrupt or empty saved_model.pb)
            if not isinstance(model, str):
                raise
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(
                f"Could not read the SavedModel {model} ({detail}); its saved_model.pb is "
                "damaged or not a SavedModel. Save the model again (model.export(...) or "
                "tf.saved_model.save).") from None
        _configure(converter, mode, calib, integer_io)
        try:
            if float_layers:
                from tfcompress._graph import output_names
                from tfcompress.export._selective import quantize_with_float_layers

                return quantize_with_float_layers(converter, calib, float_layers, integer_io,
                                                  output_names(model))
            content = converter.convert()
            return widen_int16_biases(content) if mode == "int16x8" else content
        except Exception as e:  # the converter raises ConverterError and RuntimeError
            text = str(e).strip().splitlines()
            detail = next((ln for ln in text if "op" in ln.lower()), text[0] if text else "")
            raise ValueError(
                f"The TFLite converter could not build a {mode} model: "
                f"{detail.strip().rstrip('.')}. "
                + (
                    "Some op has no integer kernel; export as 'dynamic' or 'float16', or "
                    "replace that layer."
                    if mode in _NEEDS_CALIBRATION
                    else "Check that the model runs in inference mode."
                )
            ) from e


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
            `"litert-reference"` (LiteRT's reference kernels) or `"tflm"` (TensorFlow Lite for
            Microcontrollers, the `micro` extra). For `"tflm"` the batch is fixed to 1, and
            C++ sources are written beside the file: `<stem>.h` and `<stem>.cc` (the model
            as an aligned array, the arena size measured in TFLite Micro plus headroom, input
            and output scale and zero point, class names) and `<stem>_ops.h` (the exact op
            list as a `tflite::MicroMutableOpResolver`). Defaults to `"litert"`.
        verify_data: Images on which the top-1 agreement between the Keras model and the file
            on `target` is measured (at most 200). Defaults to `None`: the representative
            data, if any.
        max_flash: With `"tflm"`, refuse a model larger than this many bytes. Defaults to
            `None`.
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

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: For an unknown mode, missing calibration data, a model that cannot be
            loaded or converted, an output that would overwrite the input, or an integer model
            that still computes in float.

    Example:
        >>> import tempfile, tfcompress as tfc
        >>> ds = tfc.data.load("mnist")
        >>> model = tfc.reference.reference_cnn()
        >>> out = tempfile.mkdtemp() + "/model.tflite"
        >>> report = to_tflite(model, out, "int8", representative_data=ds)
        >>> report.integer_only
        True
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            f"Unknown quantization {quantization!r}; expected one of {QUANTIZATION_MODES}."
        )
    _tflite.check_target(target)
    if target != "tflm" and (max_flash is not None or max_ram is not None):
        raise ValueError("max_flash and max_ram apply to target='tflm' (a microcontroller).")
    if integer_io is None:
        integer_io = target == "tflm" and quantization in _NEEDS_CALIBRATION
    if integer_io and quantization not in _NEEDS_CALIBRATION:
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
    source = model if isinstance(model, (str, os.PathLike)) else None
    _io.check_not_input(path, source, representative_data)
    if target == "tflm":
        _micro.check_sources_writable(path, source, representative_data, verify_data)
    if source is not None:
        if _io.is_saved_model_dir(source):
            model = os.fspath(source)
        else:
            model = _loading.load_keras_model(source, safe_mode=safe_mode, compile=False)
    elif not hasattr(model, "export"):
        raise TypeError(
            "model must be a keras.Model, a .keras path or a SavedModel directory, got "
            f"{type(model).__name__}."
        )

    if not isinstance(model, str):  # a NaN model can crash the LiteRT interpreter
        from tfcompress._training import check_finite_weights

        check_finite_weights(model)
    calib = None
    if not isinstance(model, str):  # a folder or built-in set is read as the model takes it
        from tfcompress._training import load_for

        representative_data, verify_data = (
            load_for(model, d, preprocessing=preprocessing)
            if isinstance(d, (str, os.PathLike)) else d
            for d in (representative_data, verify_data))
    qat = not isinstance(model, str) and is_quantize_aware(model)
    if qat:
        check_ranges_learned(model)
    from tfcompress.quantization._transform import activation_bits

    learned = {8: "int8", 16: "int16x8"}.get(activation_bits(model)) if qat else None
    if quantization in _NEEDS_CALIBRATION and learned not in (None, quantization):
        raise ValueError(
            f"The quantization-aware model simulates {learned} but the export asks for "
            f"{quantization}. Export it as {learned!r}, or build it with quantize_aware(..., "
            f"activation_bits={16 if quantization == 'int16x8' else 8}).")
    if allow_float and not (qat and quantization in _NEEDS_CALIBRATION):
        raise ValueError(
            "allow_float applies to the int8/int16x8 export of a quantization-aware model; for "
            "a post-training export, name the layers to keep in float with float_layers.")
    if float_layers and qat:
        raise ValueError(
            "float_layers applies to post-training int8 of a float model; a "
            "quantization-aware model keeps the layers it was built with in float: "
            "quantize_aware(model, float_layers=[...]).")
    kept_float = float_layer_names(model) if qat and quantization == "int8" else []
    if kept_float:
        # The converter's QAT path would quantize these layers between their neighbours'
        # fake-quant points: export the trained weights as post-training int8 instead.
        if representative_data is None:
            raise ValueError(
                f"The quantization-aware model keeps {', '.join(kept_float)} in float; its int8 "
                "export keeps them float through post-training quantization of the trained "
                "weights, which needs representative_data (on the command line --data).")
        from tfcompress.quantization import strip_fake_quant

        model, qat, learned, float_layers = strip_fake_quant(model), False, None, kept_float
    if quantization in _NEEDS_CALIBRATION and learned != quantization:
        if representative_data is None:
            raise ValueError(
                f"{quantization} export needs representative_data to calibrate activation "
                "ranges: pass a few hundred training images (an array, a Dataset or a data "
                "path; on the command line --data), or train the model with "
                "tfcompress.quantization.quantize_aware first (int8 then needs no data)."
            )
        calib = _calibration_arrays(representative_data, num_calibration_samples)
        _warn_if_out_of_range(model, calib)
        expected = _expected_input_shape(model)
        if expected is not None and tuple(calib.shape[1:]) != expected:
            raise ValueError(
                f"The model expects images of shape {expected}, but the representative data "
                f"has shape {tuple(calib.shape[1:])}. Pass data the model was trained on."
            )

    workdir = os.path.dirname(os.path.abspath(path))
    os.makedirs(workdir, exist_ok=True)
    content = _convert(model, quantization, calib, integer_io, workdir,
                       batch=_fixed_batch(model, target), float_layers=float_layers)
    summary = _tflite.summarize(_tflite.interpreter(content))
    float_ops = summary.float_compute_ops()
    unasked = float_ops
    if float_layers:  # the float ops asked for are not an error; any other one is
        from tfcompress._graph import output_names
        from tfcompress.export._selective import layer_matches, tensor_matches

        outputs = {d.name for d, layer in zip(summary.outputs, output_names(model),
                                              strict=False)
                   if layer_matches(layer, float_layers)}
        unasked = [o for o in float_ops if not tensor_matches(o.output_name, float_layers)
                   and o.output_name not in outputs]
        allow_float = not unasked
    if quantization in _NEEDS_CALIBRATION and unasked and not allow_float:
        listed = "; ".join(
            f"{o.op} ({'/'.join(o.output_dtypes)}) from layer {o.layer!r}" for o in unasked
        )
        raise ValueError(
            f"The {quantization} model would still compute in float: {listed}. Nothing was "
            "written. Replace or remove those layers, export as 'dynamic' or 'float16', or "
            "accept them with allow_float=True (on the command line --allow-float)."
        )
    micro = _micro.measure(content, max_flash, max_ram, summary) if target == "tflm" else None
    agreement, samples = None, 0
    check = verify_data if verify_data is not None else representative_data
    if check is not None and not isinstance(model, str):
        agreement, samples = _agreement(model, content, check, target)
    files = {os.fspath(path): content}
    if micro is not None:
        names = class_names
        if names is None and isinstance(check, Dataset):
            names = check.class_names
        sources = _micro.sources(content, path, micro, summary, names)
        files.update(sources)
        micro = dataclasses.replace(micro, files=tuple(sources))
    _io.write_all_atomic(files)  # the model and its C++ files: all of them or none
    return ExportReport(
        path=os.fspath(path),
        quantization=quantization,
        size_bytes=len(content),
        inputs=summary.inputs,
        outputs=summary.outputs,
        op_counts=summary.op_counts(),
        float_ops=tuple(float_ops),
        integer_only=summary.is_integer_only(quantization)
        if quantization in _NEEDS_CALIBRATION
        else False,
        calibration_samples=0 if calib is None else len(calib),
        target=target,
        agreement=agreement,
        agreement_samples=samples,
        micro=micro,
    )


def _expected_range(model: Any) -> tuple[float, float, str] | None:
    """The input range the model saw in training, where it can be known: the range a QAT
    model's input quantizer learned, or the range its first Rescaling/Normalization layer
    implies."""
    if isinstance(model, str):
        return None
    from tfcompress.quantization._transform import _quantizers

    inputs = [q for q in _quantizers(model) if q.name.startswith("input_quant")]
    if inputs:
        from keras import ops

        q = inputs[0]
        return (float(ops.convert_to_numpy(q.range_min)),
                float(ops.convert_to_numpy(q.range_max)), "its input quantizer learned")
    from tfcompress.data import Preprocessing

    prep = Preprocessing.from_model(model)
    if prep is None:
        return None
    low, high = prep.bounds()
    return low, high, f"its layer says ({prep.source.removeprefix('read from ')})"


def _warn_if_out_of_range(model: Any, x: np.ndarray) -> None:
    """Warns when calibration images lie far from the range the model was trained on (e.g.
    [0, 1] images for a model that expects 0-255): the int8 ranges would be wrong."""
    expected = _expected_range(model)
    if expected is None or x.size == 0:
        return
    low, high, why = expected
    span, data_span = max(high - low, 1e-6), float(x.max() - x.min())
    if data_span < span / 8 or data_span > span * 8 or x.max() < low + span / 8 or \
            x.min() > high - span / 8:
        import warnings

        warnings.warn(
            f"The calibration images span [{float(x.min()):.3g}, {float(x.max()):.3g}], but "
            f"the model expects about [{low:.3g}, {high:.3g}] ({why}). Give images in the "
            "model's range: preprocessing='0-255' / '-1-1' when loading (on the command line "
            "--input-range).", stacklevel=3)


def _fixed_batch(model: Any, target: str) -> int | None:
    """1 for a microcontroller; the model's own batch size where its inputs fix one."""
    if isinstance(model, str):  # a SavedModel directory keeps its own signature
        return None
    if target == "tflm":
        return 1
    sizes = {t.shape[0] for t in getattr(model, "inputs", None) or []}
    return sizes.pop() if len(sizes) == 1 and isinstance(next(iter(sizes)), int) else None


def _agreement(model: Any, content: bytes, data: Any, target: str, limit: int = 200
               ) -> tuple[float, int]:
    """Top-1 agreement between the Keras model and the file run on `target`: along the last
    axis of every output (per pixel, per anchor...), the lowest over the outputs."""
    x = _calibration_arrays(data, limit)
    keras_out = model.predict(x, batch_size=64, verbose=0)
    keras_out = keras_out if isinstance(keras_out, (list, tuple)) else [keras_out]
    shapes = [tuple(np.shape(o)[1:]) for o in keras_out]
    file_out = _tflite.run_all(_tflite.interpreter(content, target=target), x, shapes)
    scores = [float(np.mean(np.argmax(k, -1) == np.argmax(f, -1)))
              for k, f in zip(keras_out, file_out, strict=True) if np.shape(k)[-1] > 1]
    return (min(scores) if scores else 1.0), len(x)



def _expected_input_shape(model: Any) -> tuple[int, ...] | None:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    shape = tuple(inputs[0].shape[1:])
    return shape if all(isinstance(d, int) for d in shape) else None
