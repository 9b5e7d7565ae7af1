"""The conversion stage of `to_tflite`: calibration images, the converter configured for a
quantization mode, and the `.tflite` bytes it makes (in a scratch folder beside the output);
what the model expects of its input (shape, range), for the checks before conversion."""

import os
import types
from typing import Any

import numpy as np

from tfcompress import _io
from tfcompress._targets import Target
from tfcompress.data import Dataset, Part, as_arrays
from tfcompress.data._parts import is_stream
from tfcompress.export._fixups import widen_int16_biases

# The modes whose activations are integers: they need calibration (or learned ranges).
INTEGER_MODES = ("int8", "int16x8")


def calibration_arrays(data: Any, num_samples: int) -> np.ndarray:
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


def convert(model: Any, mode: str, calib: np.ndarray | None, integer_io: bool,
            workdir: str, batch: int | None = None, float_layers: Any = None,
            postprocess: Any = None) -> bytes:
    """The `.tflite` bytes of `model` in `mode`; `postprocess` (`(Postprocess, anchors)`)
    ends a detector's file with `TFLite_Detection_PostProcess`."""
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
            from tfcompress._inference import without_augmentation

            model, gone = without_augmentation(model)
            if float_layers and gone:  # an augmentation layer left no op to keep float
                float_layers = [n for n in float_layers if n not in gone]
            if postprocess is not None:
                _export_with_postprocess(model, saved, *postprocess)
            else:
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
        if postprocess is not None:
            converter.allow_custom_ops = True  # the op is a custom one LiteRT and TFLM register
            converter.inference_output_type = tf.float32  # its outputs are float
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
                    if mode in INTEGER_MODES
                    else "Check that the model runs in inference mode."
                )
            ) from e


def _export_with_postprocess(model: Any, saved: str, post: Any, anchors: np.ndarray) -> None:
    """A SavedModel of `model` followed by the post-processing op, at batch 1."""
    import keras

    from tfcompress.detection._postprocess import serving_function

    serve, spec = serving_function(model, anchors, post, tuple(model.inputs[0].shape[1:]))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[spec])
    archive.write_out(saved, verbose=False)


def _expected_range(model: Any) -> tuple[float, float, str] | None:
    """The input range the model saw in training, where it can be known: the range a QAT
    model's input quantizer learned, or the range its first Rescaling/Normalization layer
    implies."""
    if isinstance(model, str):
        return None
    from tfcompress import _graph

    # a quantization-aware model's input quantizers (known by their learned range, so that
    # export needs nothing from tfcompress.quantization, which previews exports)
    inputs = [layer for layer in _graph.all_layers(model) if layer.name.startswith(
        "input_quant") and hasattr(layer, "range_min") and hasattr(layer, "range_max")]
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


def warn_if_out_of_range(model: Any, x: np.ndarray) -> None:
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


def fixed_batch(model: Any, target: Target) -> int | None:
    """1 for a target that fixes it (a microcontroller); the model's own batch size where its
    inputs fix one."""
    if isinstance(model, str):  # a SavedModel directory keeps its own signature
        return None
    if target.fixed_batch:
        return 1
    sizes = {t.shape[0] for t in getattr(model, "inputs", None) or []}
    return sizes.pop() if len(sizes) == 1 and isinstance(next(iter(sizes)), int) else None


def expected_input_shape(model: Any) -> tuple[int, ...] | None:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    shape = tuple(inputs[0].shape[1:])
    return shape if all(isinstance(d, int) for d in shape) else None
