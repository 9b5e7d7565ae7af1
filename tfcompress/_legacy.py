"""Keras 2 models as Keras 3 models: `tf_keras` objects, Keras 2 `.h5` files and `tf_keras`
SavedModel directories.

The model is read where Keras 2 runs (`tf_keras`, from the `tfmot` extra): a file in a
subprocess with `TF_USE_LEGACY_KERAS=1`, an object in this process. From there come its
architecture (`to_json`), every layer's weights, and every layer's output on a fixed probe
batch. Keras 3 rebuilds the architecture from that config with its own legacy deserializer,
after the config keys Keras 3 no longer takes are removed where they cannot change what the
model computes (a `DepthwiseConv2D`'s `groups: 1`, initializers, empty regularizers...). The
weights are copied layer by layer, and every layer's output is compared with Keras 2's: a
layer that computes differently (more than 1e-5 relative) is named and nothing is returned.

A Keras 2 `.h5` file can be read without `tf_keras` (from its config and weights), but it is
then not verified, and a warning says so.
"""

import inspect
import json
import os
import subprocess
import sys
import tempfile
import warnings
from typing import Any

import numpy as np

TOLERANCE = 1e-5
PROBE_BATCH = 2
INSTALL = "pip install 'tfcompress[tfmot]'"
# Config keys Keras 3 dropped, with the values under which they change nothing.
_NEUTRAL = {"groups": (1,), "fused": (None, True, False), "renorm": (False,),
            "renorm_clipping": (None,), "renorm_momentum": None, "virtual_batch_size": (None,),
            "adjustment": (None,), "ragged": (False,), "optional": (False,)}


class LegacyModelError(ValueError):
    """A Keras 2 model that could not be carried over to Keras 3 exactly."""


class LegacyReadError(LegacyModelError):
    """Keras 2 itself could not read the file as a Keras model."""


class UnsafeModelError(LegacyModelError):
    """A Keras 2 file that would run its own code when read, refused in safe mode."""


def is_tf_keras_model(obj: Any) -> bool:
    """True for a model object of Keras 2 (`tf_keras`, or `keras` 2.x inside TensorFlow)."""
    module = type(obj).__module__
    return module.startswith(("tf_keras", "keras.src.engine", "keras.engine",
                              "tensorflow.python.keras")) and hasattr(obj, "to_json")


def keras_version_of_h5(path: str) -> str | None:
    """The Keras version an `.h5` model file was written by, or None."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version")
    except Exception:  # noqa: BLE001 (not an HDF5 file: the normal loader says so)
        return None
    if isinstance(version, bytes):
        version = version.decode()
    return None if version is None else str(version)


def is_keras2_h5(path: str) -> bool:
    version = keras_version_of_h5(path)
    return version is not None and version.split(".")[0] in ("1", "2")


def is_tf_keras_saved_model(path: str) -> bool:
    """True for a SavedModel directory written by Keras 2 (it holds its Keras metadata)."""
    return os.path.isfile(os.path.join(path, "keras_metadata.pb"))


# ---------------------------------------------------------------- what runs code on reading

# Class names of configs' structure (nested models, TF-op nodes, serialized tuples and arrays).
_STRUCTURE = {"Functional", "Model", "Sequential", "InputLayer", "TFOpLambda",
              "SlicingOpLambda", "__tuple__", "__tensor__", "__numpy__", "__bytes__",
              "__ellipsis__", "__slice__", "__typespec__"}
_CONFIG_MODULES = ("layers", "initializers", "regularizers", "constraints", "optimizers",
                   "losses", "metrics", "activations", "mixed_precision")


def _known_classes(keras_module: Any) -> set[str]:
    """The class names a Keras package (`keras` or `tf_keras`) deserializes by itself."""
    names: set[str] = set()
    for sub in _CONFIG_MODULES:
        module = getattr(keras_module, sub, None)
        names |= {n for n in dir(module) if not n.startswith("_")} if module else set()
    return names


def code_in_config(config: Any, known: "set[str] | None" = None
                   ) -> list[tuple[bool, str]]:
    """What in a Keras 2 model config would run code of the file's choosing when Keras 2 reads
    it, found before anything is deserialized: Lambda layers (their marshalled bytecode runs as
    the model is rebuilt), classes that are not Keras' own (found by name or module), and
    TF-op nodes calling a TensorFlow function other than the plain maths tfcompress rebuilds
    (any TensorFlow function could be named there, file writes included).

    Args:
        config: The decoded JSON config (a model's, or a SavedModel node's metadata).
        known: The class names the reading Keras package provides. Defaults to `None`:
            names are not judged, only modules (another package's class is imported by its
            module name).

    Returns:
        `(unsafe, phrase)` per finding, in config order and without repeats: `unsafe` is True
        for code that `safe_mode=False` may run, False for a TF op tfcompress cannot rebuild
        in any mode.
    """
    found: list[tuple[bool, str]] = []
    known = None if known is None else set(known) | _STRUCTURE

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        name = node.get("class_name")
        inner = node.get("config") if isinstance(node.get("config"), dict) else {}
        label = inner.get("name", node.get("name"))
        finding = None
        if isinstance(name, str):
            registered = str(node.get("registered_name") or "")
            module = str(node.get("module") or "keras").split(".")[0]
            if name in ("Lambda", "__lambda__"):
                finding = (True, f"layer {label!r} is a Lambda")
            elif name in ("TFOpLambda", "SlicingOpLambda"):
                if inner.get("function") not in _tf_functions():
                    finding = (False, f"layer {label!r} is the TensorFlow op "
                                      f"tf.{inner.get('function')}, which tfcompress cannot "
                                      "rebuild in Keras 3: write it as a Keras layer or a "
                                      "keras.ops call and save the model again")
            elif (known is not None and name not in known) or ">" in registered or \
                    module not in ("keras", "tf_keras", "tensorflow"):
                finding = (True, f"layer {label!r} is of class {name!r}, which is not Keras' own")
        if finding is not None and finding not in found:
            found.append(finding)
        for value in node.values():
            visit(value)

    visit(config)
    return found


def refuse_code(found: list[tuple[bool, str]], source: str, safe_mode: bool = True) -> None:
    """Raises the one-line refusal for what `code_in_config` found in `source`: a TF op that
    cannot be rebuilt in any mode, code only in safe mode."""
    ops = [phrase for unsafe, phrase in found if not unsafe]
    if ops:
        raise LegacyModelError(f"{source} cannot be carried over to Keras 3: {ops[0]}.")
    code = [phrase for unsafe, phrase in found if unsafe]
    if code and safe_mode:
        more = f" (and {len(code) - 1} more)" if len(code) > 1 else ""
        raise UnsafeModelError(
            f"{source} is a Keras 2 model whose {code[0]}{more}: reading it would run code "
            "from the file, and Keras 2 files have no safe mode, so tfcompress did not read it. "
            "If you trust the file, pass safe_mode=False (on the command line: --unsafe).")


def h5_config(path: str) -> Any:
    """The model config stored in an `.h5` file, decoded, or None."""
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config")
    if config is None:
        return None
    return json.loads(config.decode() if isinstance(config, bytes) else str(config))


def saved_model_configs(path: str) -> list[Any]:
    """The Keras metadata of every object in a Keras 2 SavedModel, decoded (from
    `keras_metadata.pb`, or inside `saved_model.pb` for SavedModels from before TF 2.5)."""
    metadata = []
    keras_pb = os.path.join(path, "keras_metadata.pb")
    if os.path.isfile(keras_pb):
        from tf_keras.protobuf import saved_metadata_pb2

        saved = saved_metadata_pb2.SavedMetadata()
        with open(keras_pb, "rb") as f:
            saved.ParseFromString(f.read())
        metadata = [node.metadata for node in saved.nodes]
    else:
        from tensorflow.core.protobuf import saved_model_pb2

        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
        metadata = [node.user_object.metadata for graph in saved.meta_graphs
                    for node in graph.object_graph_def.nodes if node.HasField("user_object")]
    decoded = [json.loads(m) for m in metadata if m]
    # what deserialization reads: each object's class and config (shapes and the training
    # config, which compile=False never reads, are left out)
    return [{"class_name": d.get("class_name"), "name": d.get("name"),
             "config": d.get("config")} for d in decoded if isinstance(d, dict)]


def tf_keras_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tf_keras") is not None


# ---------------------------------------------------------------- the Keras 2 side


def _walk(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(path, layer) for every layer, nested models entered ("outer/inner")."""
    out = []
    for layer in model.layers:
        out.append((prefix + layer.name, layer))
        if hasattr(layer, "layers") and hasattr(layer, "to_json"):
            out.extend(_walk(layer, prefix + layer.name + "/"))
    return out


def _probe(shapes: list[tuple]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(0.0, 1.0, (PROBE_BATCH,) + tuple(s)).astype(np.float32)
            for s in shapes]


def _layer_outputs(model: Any, make_model: Any, probe: list[np.ndarray]
                   ) -> dict[str, list[np.ndarray]]:
    """Each top-level layer's outputs on `probe` (layers called once only)."""
    names, tensors = [], []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            out = layer.output
        except (AttributeError, ValueError, RuntimeError):
            continue  # a shared layer has no single output
        names.append(layer.name)
        tensors.append(out)
    if not tensors:
        return {}
    flat = [t for ts in tensors for t in (ts if isinstance(ts, (list, tuple)) else [ts])]
    counts = [len(ts) if isinstance(ts, (list, tuple)) else 1 for ts in tensors]
    values = make_model(model.inputs, flat).predict(probe if len(probe) > 1 else probe[0],
                                                    verbose=0)
    values = values if isinstance(values, list) else [values]
    result, i = {}, 0
    for name, n in zip(names, counts, strict=True):
        result[name] = [np.asarray(v) for v in values[i:i + n]]
        i += n
    return result


def dump(model: Any, out_path: str) -> None:
    """Writes what Keras 3 needs to rebuild a Keras 2 `model`, and what to check it against,
    to the `.npz` at `out_path`. Runs where `model` lives (Keras 2)."""
    if not hasattr(model, "_is_graph_network") or not model._is_graph_network:
        raise LegacyModelError(
            f"{model.name!r} is a subclassed Keras 2 model: its architecture cannot be read. "
            "Rebuild it with the functional API or as a Sequential.")
    config = model.to_json()
    arrays: dict[str, np.ndarray] = {"config": np.array(config)}
    for path, layer in _walk(model):
        if hasattr(layer, "layers") and hasattr(layer, "to_json"):
            continue
        for i, w in enumerate(layer.get_weights()):
            arrays[f"w|{path}|{i}"] = w
    probe = _probe([tuple(t.shape[1:]) for t in model.inputs])
    for i, x in enumerate(probe):
        arrays[f"x|{i}"] = x
    make = type(model)  # tf_keras' Functional: Model(inputs, outputs)
    for name, values in _layer_outputs(model, lambda i, o: make(i, o), probe).items():
        for i, v in enumerate(values):
            arrays[f"o|{name}|{i}"] = v
    np.savez(out_path, **arrays)


# ---------------------------------------------------------------- the Keras 3 side


def _accepted(cls: type) -> set[str]:
    """The keyword arguments a Keras 3 layer class takes."""
    import keras

    names: set[str] = {"name", "trainable", "dtype", "autocast", "input_dim", "input_shape",
                       "batch_input_shape", "batch_size", "weights", "activity_regularizer",
                       "batch_shape", "sparse", "input_tensor"}
    for klass in cls.__mro__:
        if klass in (keras.layers.Layer, object):
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names


def _neutral(key: str, value: Any) -> bool:
    if key.endswith("_initializer") or (key.endswith(("_regularizer", "_constraint"))
                                        and value is None):
        return True  # initializers never change a model whose weights are loaded
    allowed = _NEUTRAL.get(key, ())
    return key in _NEUTRAL and (allowed is None or value in allowed)


def _sanitize(layers: list[dict], problems: list[str]) -> None:
    """Removes, in place, the config keys Keras 3 does not take where they change nothing;
    the others go to `problems`."""
    import keras

    for spec in layers:
        name = spec.get("class_name", "")
        config = spec.get("config", {})
        if name in ("Functional", "Model", "Sequential"):
            _sanitize(config.get("layers", []), problems)
            continue
        if name in ("TFOpLambda", "SlicingOpLambda"):
            _tf_op_node(spec, problems)
            continue
        cls = getattr(keras.layers, name, None)
        if cls is None:
            continue  # a custom class: Keras 3 finds it, or says it cannot
        if name == "BatchNormalization" and isinstance(config.get("axis"), list) and \
                len(config["axis"]) == 1:
            config["axis"] = config["axis"][0]  # Keras 2 saved a list, Keras 3 takes an int
        accepted = _accepted(cls)
        for key in [k for k in config if k not in accepted]:
            if _neutral(key, config[key]):
                config.pop(key)
            else:
                problems.append(f"layer {config.get('name')!r} ({name}) has {key}="
                                f"{config[key]!r}, which Keras 3's {name} does not support")


# TensorFlow functions that Keras 2 recorded as graph nodes (`x + 3.0`, `tf.reshape(x, s)`,
# `x[:, 1:]`), as keras.ops calls: name -> (function, positional keyword names).
def _tf_functions() -> dict[str, tuple[Any, tuple[str, ...]]]:
    from keras import ops

    binary = ("x", "y")
    unary = ("x",)
    return {
        "__operators__.add": (ops.add, binary), "math.add": (ops.add, binary),
        "math.subtract": (ops.subtract, binary), "__operators__.sub": (ops.subtract, binary),
        "math.multiply": (ops.multiply, binary), "math.truediv": (ops.divide, binary),
        "math.divide": (ops.divide, binary), "math.maximum": (ops.maximum, binary),
        "math.minimum": (ops.minimum, binary), "nn.relu": (ops.relu, ("features",)),
        "nn.relu6": (ops.relu6, ("features",)), "math.sigmoid": (ops.sigmoid, unary),
        "nn.sigmoid": (ops.sigmoid, unary), "math.tanh": (ops.tanh, unary),
        "nn.silu": (ops.silu, ("features",)), "nn.swish": (ops.silu, ("features",)),
        "nn.softmax": (ops.softmax, ("logits",)), "math.exp": (ops.exp, unary),
        "math.sqrt": (ops.sqrt, unary), "math.negative": (ops.negative, unary),
        "reshape": (ops.reshape, ("tensor", "shape")),
        "compat.v1.transpose": (ops.transpose, ("a", "perm")),
        "transpose": (ops.transpose, ("a", "perm")),
        "expand_dims": (ops.expand_dims, ("input", "axis")),
        "compat.v1.squeeze": (ops.squeeze, ("input", "axis")),
        "squeeze": (ops.squeeze, ("input", "axis")),
        "concat": (ops.concatenate, ("values", "axis")),
        "math.reduce_mean": (ops.mean, ("input_tensor", "axis", "keepdims")),
        "math.reduce_max": (ops.max, ("input_tensor", "axis", "keepdims")),
        "math.reduce_sum": (ops.sum, ("input_tensor", "axis", "keepdims")),
        "__operators__.getitem": (None, ("x", "slice_spec")),
    }


_ARG_RENAMES = {"features": "x", "logits": "x", "tensor": "x", "a": "x", "input": "x",
                "input_tensor": "x", "values": "xs", "perm": "axes", "shape": "newshape"}


def _is_tensor_ref(value: Any) -> bool:
    return (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
            and isinstance(value[1], int) and isinstance(value[2], int))


def _tf_op_node(spec: dict, problems: list[str]) -> None:
    """Turns a Keras 2 TF-op node into a `_TFOpNode` call, in place: tensors in its keyword
    arguments become inputs, the other arguments constants."""
    config = spec["config"]
    function = config.get("function")
    if function not in _tf_functions():
        problems.append(f"layer {config.get('name')!r} is the TensorFlow op tf.{function}, "
                        "which tfcompress cannot rebuild in Keras 3: write it as a Keras layer "
                        "or a keras.ops call and save the model again")
        return
    new_nodes = []
    for node in spec.get("inbound_nodes", []):
        entries = node if node and isinstance(node[0], list) else [node]
        kwargs = dict(entries[0][3]) if len(entries[0]) > 3 else {}
        tensors = [[e[0], e[1], e[2], {}] for e in entries]
        tensor_kwargs = [k for k, v in kwargs.items() if _is_tensor_ref(v)]
        for k in tensor_kwargs:
            ref = kwargs.pop(k)
            tensors.append([ref[0], ref[1], ref[2], {}])
        kwargs.pop("name", None)
        new_nodes.append(tensors)
        config.update({"list_input": len(entries) > 1, "tensor_kwargs": tensor_kwargs,
                       "constants": kwargs})
    if len(new_nodes) != 1:
        problems.append(f"layer {config.get('name')!r} (tf.{function}) is called "
                        f"{len(new_nodes)} times; tfcompress rebuilds TF ops called once")
        return
    spec["class_name"] = "_TFOpNode"
    spec.pop("module", None)
    spec.pop("registered_name", None)
    spec["inbound_nodes"] = new_nodes
    spec["config"] = {k: config[k] for k in ("name", "function", "list_input",
                                              "tensor_kwargs", "constants")}


def _tf_op_layer_class() -> type:
    import keras

    class _TFOpNode(keras.layers.Layer):
        """A Keras 2 TF-op node, computed with keras.ops (replaced by plain keras.ops calls
        once the model is verified)."""

        def __init__(self, function, list_input=False, tensor_kwargs=(), constants=None,
                     **kwargs):
            super().__init__(**kwargs)
            self.function = function
            self.list_input = list_input
            self.tensor_kwargs = list(tensor_kwargs)
            self.constants = dict(constants or {})

        def call(self, inputs):
            return apply_tf_op(self.function, self.list_input, self.tensor_kwargs,
                               self.constants, inputs)

        def get_config(self):
            return {**super().get_config(), "function": self.function,
                    "list_input": self.list_input, "tensor_kwargs": self.tensor_kwargs,
                    "constants": self.constants}

    return _TFOpNode


def apply_tf_op(function: str, list_input: bool, tensor_kwargs: list[str], constants: dict,
                inputs: Any) -> Any:
    """What a Keras 2 TF-op node computes, with keras.ops."""
    fn, names = _tf_functions()[function]
    tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    extra = tensors[len(tensors) - len(tensor_kwargs):] if tensor_kwargs else []
    main = tensors[:len(tensors) - len(tensor_kwargs)] if tensor_kwargs else tensors
    values = {names[0]: main if list_input else main[0], **constants,
              **dict(zip(tensor_kwargs, extra, strict=True))}
    if function == "__operators__.getitem":
        index = tuple(slice(d["start"], d["stop"], d["step"]) if isinstance(d, dict) else d
                      for d in values["slice_spec"])
        return values["x"][index]
    positional = [values.pop(n) for n in names if n in values]
    renamed = {_ARG_RENAMES.get(k, k): v for k, v in values.items()}
    if function == "concat":
        return fn(positional[0], axis=positional[1] if len(positional) > 1 else
                  renamed.get("axis", -1))
    return fn(*positional, **renamed)


def _with_keras_ops(model: Any) -> Any:
    """`model` with every `_TFOpNode` replaced by the keras.ops calls it makes, so that the
    transforms see ordinary op nodes (`x + 3.0`)."""
    from tfcompress import _graph

    if not any(type(layer).__name__ == "_TFOpNode" for layer in _graph.all_layers(model)):
        return model

    def visit(node: Any, args: tuple, kwargs: dict) -> Any:
        op = node.operation
        if type(op).__name__ != "_TFOpNode":
            return None
        out = apply_tf_op(op.function, op.list_input, op.tensor_kwargs, op.constants, args[0])
        _graph.name_producer(out, op.name)  # e.g. "tf.math.multiply", as in Keras 2
        return out

    return _graph.rebuild(model, visit, model.name)


def _rebuild(config: dict, source: str) -> Any:
    import keras

    problems: list[str] = []
    inner = config.get("config", {})
    _sanitize(inner.get("layers", []), problems)
    if problems:
        raise LegacyModelError(f"{source} cannot be carried over to Keras 3: {problems[0]}"
                               + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                  else "") + ".")
    kind = config.get("class_name")
    try:
        with keras.saving.custom_object_scope({"_TFOpNode": _tf_op_layer_class()}):
            if kind == "Sequential":
                return keras.Sequential.from_config(inner)
            return keras.Model.from_config(inner)
    except Exception as e:  # noqa: BLE001 (the layer Keras 3 failed on is named)
        detail = str(e).split("\n")[0]
        raise LegacyModelError(f"{source} cannot be carried over to Keras 3: {detail}") from e


def _copy_weights(model: Any, weights: dict[str, list[np.ndarray]], source: str) -> None:
    from tfcompress import _graph

    for path, layer in _walk(model):
        if hasattr(layer, "layers") and hasattr(layer, "to_json"):
            continue
        saved = weights.get(path, [])
        if len(saved) != len(layer.weights):
            raise LegacyModelError(
                f"{source}: layer {path!r} ({type(layer).__name__}) has {len(saved)} weights in "
                f"Keras 2 and {len(layer.weights)} in Keras 3, so it cannot be carried over.")
        try:
            _graph.set_weights(layer, saved)
        except ValueError as e:
            raise LegacyModelError(f"{source}: layer {path!r} ({type(layer).__name__}) has "
                                   f"weights of other shapes in Keras 3 ({e}).") from e


def _verify(model: Any, probe: list[np.ndarray], expected: dict[str, list[np.ndarray]],
            source: str) -> None:
    import keras

    got = _layer_outputs(model, lambda i, o: keras.Model(i, o), probe)
    for layer in model.layers:  # in graph order: the first layer that differs is the cause
        if layer.name not in expected or layer.name not in got:
            continue
        for want, have in zip(expected[layer.name], got[layer.name], strict=False):
            scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
            diff = float(np.max(np.abs(want - have))) if want.shape == have.shape else np.inf
            if diff > TOLERANCE * scale:
                raise LegacyModelError(
                    f"{source}: layer {layer.name!r} ({type(layer).__name__}) computes "
                    f"differently in Keras 3 (largest difference {diff:.3g} on a probe batch), "
                    "so the model cannot be carried over exactly.")


def from_dump(npz_path: str, source: str) -> Any:
    """The Keras 3 model rebuilt from a `dump`, verified layer by layer."""
    with np.load(npz_path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    model = _rebuild(json.loads(str(arrays["config"])), source)
    weights: dict[str, list[np.ndarray]] = {}
    expected: dict[str, list[np.ndarray]] = {}
    probe = []
    for key in sorted(arrays, key=lambda k: (k.rsplit("|", 1)[0],
                                             int(k.rsplit("|", 1)[-1]) if "|" in k else 0)):
        kind = key.split("|")[0]
        if kind == "w":
            _, path, _ = key.split("|")
            weights.setdefault(path, []).append(arrays[key])
        elif kind == "o":
            _, name, _ = key.split("|")
            expected.setdefault(name, []).append(arrays[key])
        elif kind == "x":
            probe.append(arrays[key])
    _copy_weights(model, weights, source)
    _verify(model, probe, expected, source)
    return _with_keras_ops(model)


def from_tf_keras(model: Any) -> Any:
    """A Keras 3 copy of a Keras 2 (`tf_keras`) model object, verified layer by layer.

    Raises:
        ValueError: naming the layer that could not be carried over.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        dump(model, path)
        return from_dump(path, f"the tf_keras model {model.name!r}")


def keras3(model: Any) -> Any:
    """`model` itself, or a verified Keras 3 copy when it is a Keras 2 (`tf_keras`) object."""
    return from_tf_keras(model) if is_tf_keras_model(model) else model


def load(path: str, safe_mode: bool = True) -> Any:
    """A Keras 2 `.h5` file or `tf_keras` SavedModel directory as a Keras 3 model.

    With `tf_keras` installed, the file is read by Keras 2 in a subprocess and the result is
    verified layer by layer. Without it, an `.h5` is rebuilt from its config and weights,
    unverified (a warning says so); a SavedModel needs `tf_keras`. In safe mode the stored
    config is read first, and a model holding code (a Lambda, a custom class) is refused
    before anything deserializes it.
    """
    if not os.path.isdir(path):  # a SavedModel's metadata is read by the subprocess
        refuse_code(code_in_config(h5_config(path)), path, safe_mode)
    if not tf_keras_available():
        if os.path.isdir(path):
            raise LegacyModelError(
                f"{path} is a Keras 2 SavedModel; reading it needs tf_keras ({INSTALL}).")
        return _load_h5_unverified(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.npz")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-m", "tfcompress._legacy", path, out,
                               "safe" if safe_mode else "unsafe"],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0 or not os.path.exists(out):
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            refused = [line[len(_REFUSED):] for line in lines if line.startswith(_REFUSED)]
            if refused:  # "<error class>: <message>", as the subprocess raised it
                kind, message = refused[-1].split(": ", 1)
                raise (UnsafeModelError if kind == UnsafeModelError.__name__
                       else LegacyModelError)(message)
            detail = next((line for line in reversed(lines) if "Error" in line),
                          lines[-1] if lines else "no output")
            raise LegacyReadError(f"Keras 2 (tf_keras) could not read {path}: {detail}")
        return from_dump(out, path)


def _load_h5_unverified(path: str) -> Any:
    config = h5_config(path)
    if config is None:
        raise LegacyModelError(f"{path} holds weights only, no model architecture.")
    model = _rebuild(config, path)
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001
        raise LegacyModelError(f"Could not read the weights of {path} into Keras 3 ({e}); "
                               f"with tf_keras installed ({INSTALL}) each layer is named.") from e
    warnings.warn(f"{path} was written by Keras 2 and read without tf_keras, so its outputs "
                  f"were not checked against Keras 2; {INSTALL} to verify it.", stacklevel=3)
    return model


_REFUSED = "tfcompress-refused: "


def _main(argv: list[str]) -> int:
    """`python -m tfcompress._legacy MODEL OUT.npz safe|unsafe`, run with
    `TF_USE_LEGACY_KERAS=1`."""
    source, out = argv[:2]
    safe_mode = argv[2:] != ["unsafe"]
    import tf_keras

    # nothing of the file is deserialized before this check
    configs = saved_model_configs(source) if os.path.isdir(source) else [h5_config(source)]
    try:
        refuse_code(code_in_config(configs, _known_classes(tf_keras)), source, safe_mode)
    except LegacyModelError as e:
        print(f"{_REFUSED}{type(e).__name__}: {e}", file=sys.stderr)
        return 3
    model = tf_keras.models.load_model(source, compile=False)
    dump(model, out)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
