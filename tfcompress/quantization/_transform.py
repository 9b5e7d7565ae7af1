"""`quantize_aware`: rebuild a functional Keras model with fake-quant where TFLite quantizes.

The rewrite walks the functional graph once, in order, and for each node decides:
- Conv1D/Conv2D/DepthwiseConv2D/Dense: replaced by a quantized layer, with a BatchNormalization
  that directly follows folded into its weights and a ReLU/ReLU6 that follows fused into it
  (TFLite fuses both, so there is no quantization point between them).
- SeparableConv: split into a quantized depthwise and a quantized 1x1 conv, as TFLite runs it.
- Conv2DTranspose: replaced by a quantized transposed conv, with the same folding and fusing.
- Layers that only move, select or average neighbouring values (max and average pooling,
  up-sampling and resizing, reshapes, padding, dropout...): kept, with no new quantization
  point: TFLite requires these ops to keep their input's scale, and their outputs stay within
  their input's range.
- `Rescaling`, `Normalization` and a BatchNormalization that follows no convolution: an
  affine op `x * scale + shift` per channel, run by TFLite as int8 MUL and ADD with quantized
  constants (`QuantScalarOp`).
- Layers and ops that compute new values (Add, Multiply, Concatenate, global average pooling,
  activations, arithmetic ops): kept, followed by an `ActivationQuantizer`.
- Nested functional models are inlined, so a `keras.applications` backbone is covered.
"""

import fnmatch
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress import _graph, _legacy, _targets
from tfcompress._graph import Graph as _Graph
from tfcompress._graph import clone_layer as _clone
from tfcompress._graph import matches as _matches
from tfcompress._graph import require_functional as _require_functional
from tfcompress._inference import augments, run_on_probe
from tfcompress.detection._anchors import Anchors
from tfcompress.quantization._layers import (
    QUANT_LAYERS,
    WEIGHT_BITS,
    ActivationQuantizer,
    QuantConv,
    QuantConvTranspose,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantScalarOp,
)

_L = keras.layers

PASSTHROUGH: tuple[type, ...] = (
    _L.MaxPooling1D, _L.MaxPooling2D, _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D,
    _L.Flatten, _L.Reshape, _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D,
    _L.GaussianNoise, _L.ZeroPadding1D, _L.ZeroPadding2D, _L.Cropping1D, _L.Cropping2D,
    _L.Permute, _L.Identity, _L.ActivityRegularization, _L.AveragePooling1D,
    _L.AveragePooling2D, _L.UpSampling1D, _L.UpSampling2D, _L.Resizing, _L.RepeatVector,
    Anchors,  # a detector's last layer: its output unchanged, with the anchors it carries
)
QUANTIZE_OUTPUT: tuple[type, ...] = (
    _L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum, _L.Concatenate,
    _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.ReLU, _L.Activation,
    _L.Softmax, _L.LeakyReLU, _L.PReLU, _L.ELU, _L.BatchNormalization,
)
# keras.ops called on symbolic tensors become graph nodes (e.g. MobileNetV3's `x + 3.0`).
_OP_PASSTHROUGH = {"Reshape", "Transpose", "ExpandDims", "Squeeze", "GetItem", "Flatten"}
_OP_QUANTIZE_OUTPUT = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
                       "Minimum", "Mean", "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu",
                       "Tanh", "Softmax", "Concatenate"}
# Layers with weights that are folded into quantized layers.
_WEIGHTED = (_L.Conv1D, _L.Conv2D, _L.DepthwiseConv2D, _L.Dense, _L.Conv2DTranspose)

_AFFINE = (_L.Rescaling, _L.Normalization, _L.BatchNormalization)

_registry: dict[type, str] = {}


def register_layer(layer_class: type, kind: str) -> None:
    """Tells `quantize_aware` how to treat a layer class it does not know.

    Args:
        layer_class: A `keras.layers.Layer` subclass.
        kind: `"passthrough"` (it only moves values: TFLite keeps the input's scale) or
            `"quantize_output"` (it computes new values: a quantizer follows it).

    Raises:
        ValueError: For another `kind`.
    """
    if kind not in ("passthrough", "quantize_output"):
        raise ValueError(f"kind must be 'passthrough' or 'quantize_output', got {kind!r}.")
    _registry[layer_class] = kind


def supported_layers() -> list[str]:
    """Names of the layer classes `quantize_aware` handles."""
    names = {c.__name__ for c in PASSTHROUGH + QUANTIZE_OUTPUT + _WEIGHTED + _AFFINE}
    names |= {"SeparableConv1D", "SeparableConv2D", "InputLayer", "Functional", "Sequential"}
    names |= {c.__name__ for c in _registry}
    return sorted(names)


def _fused_name(layer: Any) -> str | None:
    """'relu' / 'relu6' when `layer` is an activation TFLite can fuse into a conv."""
    if isinstance(layer, _L.ReLU):
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) == 0 and cfg.get("threshold", 0) == 0:
            if cfg.get("max_value") is None:
                return "relu"
            if float(cfg["max_value"]) == 6.0:
                return "relu6"
        return None
    if isinstance(layer, _L.Activation):
        name = keras.activations.serialize(layer.activation)
        name = name if isinstance(name, str) else name.get("config", name)
        return name if name in ("relu", "relu6") else None
    return None


def _activation_name(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    name = keras.activations.serialize(act)
    return name if isinstance(name, str) else str(name)


def _bn_fold(bn: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) of an inference-mode BatchNormalization over the last axis, or None."""
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    if axis not in (-1, len(bn.input.shape) - 1):
        return None
    var = ops.convert_to_numpy(bn.moving_variance)
    mean = ops.convert_to_numpy(bn.moving_mean)
    gamma = ops.convert_to_numpy(bn.gamma) if bn.scale else np.ones_like(var)
    beta = ops.convert_to_numpy(bn.beta) if bn.center else np.zeros_like(var)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _affine(layer: Any) -> tuple[Any, Any] | None:
    """`(scale, shift)` with `layer(x) == x * scale + shift` over the last axis, for a
    Rescaling, a Normalization or an inference-mode BatchNormalization; else None."""
    if isinstance(layer, _L.Rescaling):
        return layer.scale, layer.offset
    if isinstance(layer, _L.BatchNormalization):
        return _bn_fold(layer)
    if isinstance(layer, _L.Normalization):
        axis = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
        if axis not in ((-1,), (len(layer.input.shape) - 1,)):
            return None
        mean = ops.convert_to_numpy(layer.mean).reshape(-1)
        std = np.maximum(np.sqrt(ops.convert_to_numpy(layer.variance).reshape(-1)),
                         keras.config.epsilon())
        if getattr(layer, "invert", False):
            return std, mean
        return 1.0 / std, -mean / std
    return None


def _is_grouped_depthwise(layer: Any, x: Any) -> bool:
    """A Conv2D with as many groups as input channels (a depthwise conv written as one)."""
    return (type(layer) is _L.Conv2D and layer.groups > 1
            and layer.groups == int(x.shape[-1]) and layer.data_format == "channels_last")


def _unsupported_conv(layer: Any, x: Any) -> str | None:
    """Why a weighted layer cannot be quantized as TFLite runs it, or None."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first convolutions are not supported"
    if getattr(layer, "groups", 1) != 1 and not _is_grouped_depthwise(layer, x):
        return (f"a convolution in {layer.groups} groups of several channels has no int8 "
                "kernel in LiteRT")
    return None


def float_or_list(value: Any) -> Any:
    """A Python float, or a list of floats, from a number or an array."""
    arr = np.asarray(value, dtype=np.float32)
    return float(arr) if arr.ndim == 0 else arr.tolist()


class _WeightBits:
    """Which weight width each layer gets: one width for all, or `{name pattern: bits}` (the
    first matching pattern wins; unnamed layers keep 8 bits)."""

    def __init__(self, spec: Any, activation_bits: int):
        if isinstance(spec, Mapping):
            self.default, self.by_name = 8, {str(k): v for k, v in spec.items()}
        else:
            self.default, self.by_name = spec, {}
        for where, bits in [("weight_bits", self.default)] + [
                (f"weight_bits[{k!r}]", v) for k, v in self.by_name.items()]:
            if isinstance(bits, bool) or bits not in WEIGHT_BITS:
                raise ValueError(f"{where} must be 4 or 8, got {bits!r}.")
        if activation_bits != 8 and 4 in (self.default, *self.by_name.values()):
            raise ValueError(
                f"4-bit weights run with 8-bit activations only (TFLite has no int16 kernels "
                f"for int4 weights), got activation_bits={activation_bits}.")
        self.used: set[str] = set()
        self.kept_8: list[str] = []

    def explicit(self, name: str) -> int | None:
        for pattern, bits in self.by_name.items():
            if fnmatch.fnmatchcase(name, pattern):
                self.used.add(pattern)
                return bits
        return None

    def of(self, name: str) -> int:
        """The width for the layer `name`, which can take int4 weights."""
        bits = self.explicit(name)
        return self.default if bits is None else bits

    def eight_only(self, name: str, why: str) -> int:
        """8 for a layer that cannot take int4 weights; an error if it was asked by name."""
        if self.explicit(name) == 4:
            raise ValueError(f"Layer {name!r}: {why}; it cannot have 4-bit weights. Leave it "
                             "out of weight_bits.")
        if self.default == 4:
            self.kept_8.append(name)
        return 8

    def check_used(self, model: Any) -> None:
        unused = [k for k in self.by_name if k not in self.used]
        if unused:
            names = [layer.name for layer in _graph.all_layers(model)
                     if isinstance(layer, _WEIGHTED + (_L.SeparableConv2D,))]
            raise ValueError(
                f"weight_bits names {unused[0]!r}, which matches no convolution or Dense layer "
                f"of {model.name!r}; its weight layers are {', '.join(names[:8])}"
                + (" ..." if len(names) > 8 else "") + ".")
        if self.kept_8:
            warnings.warn(
                f"quantize_aware keeps 8-bit weights in {', '.join(map(repr, self.kept_8))}: "
                "LiteRT and TFLite Micro run int4 weights only in CONV_2D, DEPTHWISE_CONV_2D "
                "and FULLY_CONNECTED.", stacklevel=3)


class _Rewriter:
    def __init__(self, model, float_layers, per_channel, activation_bits, keep_zeros,
                 weight_bits):
        self.graph = _Graph(model)
        self.float_layers = float_layers
        self.per_channel = per_channel
        self.activation_bits = activation_bits
        self.keep_zeros = keep_zeros
        self.bits = weight_bits
        self.rebuilder = _graph.Rebuilder(self.visit)

    def quantizer(self, name: str) -> ActivationQuantizer:
        return ActivationQuantizer(num_bits=self.activation_bits, name=f"{name}_quant")

    def visit(self, node: Any, args: tuple, kwargs: dict) -> Any:
        op = node.operation
        name = getattr(op, "name", type(op).__name__)
        if self.float_layers and _matches(op, self.float_layers):
            if isinstance(op, _WEIGHTED + (_L.SeparableConv1D, _L.SeparableConv2D)):
                self.bits.eight_only(name, "it is kept in float (float_layers)")
            return self.quantizer(name)(_clone(op)(*args, **kwargs))
        if isinstance(op, (_L.SeparableConv1D, _L.SeparableConv2D)):
            return self.separable(op, node, args[0])
        if isinstance(op, _WEIGHTED):
            why = _unsupported_conv(op, args[0])
            if why is None:
                return self.weighted(op, node, args[0])
            self.bits.eight_only(name, f"it is kept in float ({why})")
            return self.keep_float(op, args, kwargs, why)
        for cls, kind in _registry.items():
            if isinstance(op, cls):
                out = _clone(op)(*args, **kwargs)
                return out if kind == "passthrough" else self.quantizer(name)(out)
        if isinstance(op, _L.UpSampling2D) and op.interpolation == "nearest" and \
                op.data_format == "channels_last":
            # Keras repeats rows and columns, which the converter turns into TILE ops that
            # LiteRT's reference kernels and TFLite Micro lack in int8; a nearest-neighbour
            # resize computes the same values as one RESIZE_NEAREST_NEIGHBOR.
            height, width = args[0].shape[1:3]
            return ops.image.resize(args[0], (height * op.size[0], width * op.size[1]),
                                    interpolation="nearest")
        if isinstance(op, PASSTHROUGH) or augments(op):  # augmentation: values only move
            return _clone(op)(*args, **kwargs)
        affine = _affine(op) if isinstance(op, _AFFINE) else None
        if affine is not None:
            return self.scalar_ops(args[0], float_or_list(affine[0]), float_or_list(affine[1]),
                                   name)
        constant = self.constant_operand(op, args)
        if constant is not None:
            return constant
        if isinstance(op, QUANTIZE_OUTPUT):
            return self.quantizer(name)(_clone(op)(*args, **kwargs))
        if not isinstance(op, keras.layers.Layer):
            kind = type(op).__name__
            if kind in _OP_PASSTHROUGH:
                return op(*args, **kwargs)
            if kind in _OP_QUANTIZE_OUTPUT:
                return self.quantizer(name)(op(*args, **kwargs))
        return self.keep_float(op, args, kwargs, "tfcompress does not know an int8 kernel for "
                               "it")

    def keep_float(self, op: Any, args: tuple, kwargs: dict, why: str) -> Any:
        """`op` as it is (float), its output quantized, with a warning that names it; an
        identity (which the converter removes) passes through unquantized and unnamed."""
        if is_identity(op):
            return _clone(op)(*args, **kwargs)
        name = getattr(op, "name", type(op).__name__)
        warnings.warn(
            f"quantize_aware keeps layer {name!r} ({type(op).__name__}) in float: {why}. The "
            "int8 export keeps it float between DEQUANTIZE and QUANTIZE (it then needs "
            "representative data) and its report lists it. If TFLite runs it in int8, say how "
            f"with tfcompress.quantization.register_layer({type(op).__name__}, "
            "'passthrough' or 'quantize_output').", stacklevel=5)
        return self.quantizer(name)(_clone(op)(*args, **kwargs))

    def scalar_ops(self, x: Any, scale: Any, offset: Any, name: str) -> Any:
        """`x * scale + offset` as TFLite int8 MUL/ADD with quantized constants."""
        if not np.allclose(scale, 1.0):
            x = QuantScalarOp("multiply", scale, self.activation_bits, name=f"{name}_mul")(x)
        if not np.allclose(offset, 0.0):
            x = QuantScalarOp("add", offset, self.activation_bits, name=f"{name}_add")(x)
        return x

    def constant_operand(self, op: Any, args: tuple) -> Any | None:
        """A `keras.ops` Add/Subtract/Multiply/Divide of a tensor and a constant, or None."""
        kind = type(op).__name__
        if isinstance(op, keras.layers.Layer) or len(args) != 2 or kind not in (
                "Add", "Subtract", "Multiply", "Divide", "TrueDivide"):
            return None
        is_const = [isinstance(a, (int, float, np.ndarray, np.number)) for a in args]
        if is_const.count(True) != 1:
            return None
        first_const = is_const[0]
        x, c = (args[1], args[0]) if first_const else (args[0], args[1])
        c = float_or_list(c)
        name = getattr(op, "name", kind.lower())
        if kind == "Add":
            return self.scalar_ops(x, 1.0, c, name)
        if kind == "Multiply":
            return self.scalar_ops(x, c, 0.0, name)
        if kind == "Subtract":  # x - c, or c - x = -x + c
            return (self.scalar_ops(x, -1.0, c, name) if first_const
                    else self.scalar_ops(x, 1.0, -np.asarray(c), name))
        if not first_const:  # x / c
            return self.scalar_ops(x, 1.0 / np.asarray(c), 0.0, name)
        return None

    def _follow(self, node: Any) -> tuple[Any | None, Any | None]:
        """The BatchNormalization and fusable activation nodes that directly follow `node`."""
        bn_node = act_node = None
        out = node.outputs[0]
        nxt = self.graph.single_consumer(out)
        if nxt is not None and isinstance(nxt.operation, _L.BatchNormalization) and \
                _bn_fold(nxt.operation) is not None and not (
                    self.float_layers and _matches(nxt.operation, self.float_layers)):
            bn_node = nxt
            out = nxt.outputs[0]
            nxt = self.graph.single_consumer(out)
        if nxt is not None and _fused_name(nxt.operation) and not (
                self.float_layers and _matches(nxt.operation, self.float_layers)):
            act_node = nxt
        return bn_node, act_node

    def weighted(self, layer: Any, node: Any, x: Any) -> Any:
        own_act = _activation_name(layer)
        bn_node = act_node = None
        if own_act == "linear":
            bn_node, act_node = self._follow(node)
        elif own_act in ("relu", "relu6"):
            pass
        kernel = ops.convert_to_numpy(layer.kernel).copy()
        transposed = isinstance(layer, _L.Conv2DTranspose)  # kernel (h, w, out, in)
        # A Conv2D with one group per input channel (ConvNeXt's) is a depthwise conv: output
        # channel c * multiplier + m reads input channel c, as in DepthwiseConv2D.
        as_depthwise = _is_grouped_depthwise(layer, x)
        if as_depthwise:
            kernel = kernel.reshape(kernel.shape[:2] + (int(x.shape[-1]), -1))
        depthwise = isinstance(layer, _L.DepthwiseConv2D) or as_depthwise
        channels = (kernel.shape[-2] * kernel.shape[-1] if depthwise
                    else kernel.shape[-2] if transposed else kernel.shape[-1])
        bias = (ops.convert_to_numpy(layer.bias).copy() if getattr(layer, "use_bias", False)
                else np.zeros(channels, np.float32))
        if bn_node is not None:
            scale, shift = _bn_fold(bn_node.operation)
            if depthwise:
                kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
            elif transposed:
                kernel = kernel * scale.reshape(-1, 1)
            else:
                kernel = kernel * scale
            bias = bias * scale + shift
            self.rebuilder.skip(bn_node)
        fused = "linear"
        if act_node is not None:
            fused = _fused_name(act_node.operation)
            self.rebuilder.skip(act_node)
        elif own_act in ("relu", "relu6"):
            fused = own_act
        keep = self.keep_zeros and np.mean(kernel == 0) >= 0.01
        bits = (self.bits.eight_only(layer.name, "TRANSPOSE_CONV has no int4 kernel in LiteRT "
                                     "or TFLite Micro") if transposed
                else self.bits.of(layer.name))
        common = dict(activation=fused, keep_zeros=bool(keep), weight_bits=bits,
                      activation_bits=self.activation_bits, name=f"{layer.name}_quant")
        if depthwise:
            new = QuantDepthwiseConv2D(layer.kernel_size, int(kernel.shape[-1]), layer.strides,
                                       layer.padding, layer.dilation_rate,
                                       per_channel=self.per_channel, **common)
        elif isinstance(layer, _L.Dense):
            new = QuantDense(layer.units, **common)  # per-tensor, as TFLite FC expects
        elif transposed:
            new = QuantConvTranspose(layer.filters, layer.kernel_size, layer.strides,
                                     layer.padding, layer.output_padding, layer.dilation_rate,
                                     **common)
        else:
            # The converter turns Conv1D into a 2-D conv and then loses the per-channel axis
            # of its kernel's fake-quant, so Conv1D weights are quantized per tensor.
            per_channel = self.per_channel and not isinstance(layer, _L.Conv1D)
            new = QuantConv(layer.filters, layer.kernel_size, layer.strides, layer.padding,
                            layer.dilation_rate, per_channel=per_channel, **common)
        y = new(x)
        weights = [kernel.astype(np.float32), bias.astype(np.float32)]
        if keep:
            weights.append((kernel != 0).astype(np.float32))
        new.kernel.assign(weights[0])
        new.bias.assign(weights[1])
        if keep:
            new.mask.assign(weights[2])
        # The activation after a linear layer that could not be fused.
        if own_act not in ("linear", "relu", "relu6"):
            y = self.quantizer(f"{layer.name}_act")(_L.Activation(own_act)(y))
        self.rebuilder.alias((act_node or bn_node or node).outputs[0], y)
        return y

    def separable(self, layer: Any, node: Any, x: Any) -> Any:
        if isinstance(layer, _L.SeparableConv1D):
            raise ValueError(
                f"Layer {layer.name!r}: SeparableConv1D is not supported by quantize_aware yet; "
                "keep it float with float_layers=[...]."
            )
        dw_kernel = ops.convert_to_numpy(layer.depthwise_kernel)
        pw_kernel = ops.convert_to_numpy(layer.pointwise_kernel)
        dw = QuantDepthwiseConv2D(layer.kernel_size, layer.depth_multiplier, layer.strides,
                                  layer.padding, layer.dilation_rate,
                                  per_channel=self.per_channel,
                                  activation_bits=self.activation_bits,
                                  weight_bits=self.bits.of(layer.name),
                                  name=f"{layer.name}_dw_quant")
        h = dw(x)
        dw.kernel.assign(dw_kernel)
        dw.bias.assign(np.zeros(dw.bias.shape, np.float32))
        bn_node = act_node = None
        own_act = _activation_name(layer)
        if own_act == "linear":
            bn_node, act_node = self._follow(node)
        bias = (ops.convert_to_numpy(layer.bias) if layer.use_bias
                else np.zeros(pw_kernel.shape[-1], np.float32))
        if bn_node is not None:
            scale, shift = _bn_fold(bn_node.operation)
            pw_kernel = pw_kernel * scale
            bias = bias * scale + shift
            self.rebuilder.skip(bn_node)
        fused = _fused_name(act_node.operation) if act_node is not None else (
            own_act if own_act in ("relu", "relu6") else "linear")
        if act_node is not None:
            self.rebuilder.skip(act_node)
        pw = QuantConv(layer.filters, (1, 1), per_channel=self.per_channel, activation=fused,
                       activation_bits=self.activation_bits,
                       weight_bits=self.bits.of(layer.name), name=f"{layer.name}_pw_quant")
        y = pw(h)
        pw.kernel.assign(pw_kernel.reshape(pw.kernel.shape))
        pw.bias.assign(bias.astype(np.float32))
        if own_act not in ("linear", "relu", "relu6"):
            y = self.quantizer(f"{layer.name}_act")(_L.Activation(own_act)(y))
        self.rebuilder.alias((act_node or bn_node or node).outputs[0], y)
        return y


def quantize_aware(
    model: keras.Model,
    *,
    float_layers: Any = None,
    per_channel_weights: bool = True,
    activation_bits: int = 8,
    keep_zeros: bool = True,
    sensitivity: Any = None,
    float_budget: float = 0.01,
    max_float_layers: int = 3,
    target: str | None = None,
    weight_bits: "int | Mapping[str, int]" = 8,
) -> keras.Model:
    """Returns a copy of `model` that simulates TFLite int8 inference while it trains.

    Weights are fake-quantized symmetrically with a narrow range (per output channel for
    convolutions, per tensor for Dense, as TFLite's kernels take them); activations
    asymmetrically per tensor, with ranges learned by moving averages. BatchNormalization is
    folded into the layer before it and ReLU/ReLU6 fused, exactly where TFLite fuses them, so
    what trains is what the device runs. Export the result with
    `tfcompress.export.to_tflite(q, path, "int8")`: no calibration data is needed.

    Args:
        model: A functional or Sequential Keras model (nested models are inlined). It is not
            modified.
        float_layers: Layers to keep in float: classes, `fnmatch` name patterns or
            predicates; or `"auto"`: the layers a `quantize` sensitivity scan of `model`
            (`sensitivity=`) picks, most sensitive first, while the scan's fully quantized
            model loses more than `float_budget`, at most `max_float_layers` (with the layers
            that read their outputs). `to_tflite(q, path, "int8", representative_data=...)`
            keeps them float in the file (it exports the trained weights through
            post-training quantization with those layers left out; the converter's
            quantization-aware path would quantize them). Defaults to `None`.
        per_channel_weights: Per-output-channel weight scales for convolutions; `False` gives
            per-tensor scales. Defaults to `True`.
        activation_bits: 8, or 16 to simulate the `int16x8` export mode. Defaults to `8`.
        keep_zeros: Keep weights that are exactly zero (a pruned model) at zero through QAT and
            export. Defaults to `True`.
        sensitivity: For `float_layers="auto"`: a `tfcompress.debug.SensitivityScan` of
            `model` with technique `"quantize"`, or the path of its JSON. Defaults to `None`.
        float_budget: For `"auto"`: the accuracy loss (a fraction; 0.01 is one point) that
            needs no float layer. Defaults to `0.01`.
        max_float_layers: For `"auto"`: at most this many layers are picked (the layers
            that read their outputs come on top). Defaults to `3`.
        target: Where the file will run (as `to_tflite` takes it). For an Arm Ethos-U
            target (`"ethos-u55-128"`, ...), a warning names, before any training, the
            layers whose ops Vela would leave to the CPU, with its reasons (from a quick
            int8 export of the model's structure). With 4-bit weights, the layers the
            target cannot run with them are named at once. Defaults to `None`: no check.
        weight_bits: 8, or 4 for int4 weights (symmetric, narrow range: -7..7, per channel
            as `per_channel_weights` says; each channel's range is clipped to the fraction of
            its largest weight, from 1.0 down to 0.5, that rounds with the least squared
            error), which the export stores packed two to a byte and
            LiteRT and TFLite Micro run in CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
            (other weight layers keep 8 bits, with a warning). A dict chooses per layer:
            `{"conv1": 8, "block_*": 4}` (`fnmatch` patterns of the original layer names;
            the first match wins; unnamed layers keep 8 bits). Defaults to `8`.

    Returns:
        A new, uncompiled `keras.Model`.

    Raises:
        TypeError: If `model` is a subclassed model (its graph cannot be read).
        ValueError: For a bad `float_layers`, `activation_bits`, `weight_bits` (a width
            other than 4 or 8, a name that matches no weight layer, 4 bits for a layer that
            cannot take them) or sensitivity scan.

    A layer whose int8 kernel tfcompress does not know is kept in float, with a warning that
    names it (`float_layer_names` lists it; `register_layer` says how it quantizes).

    Examples:
        >>> import keras
        >>> from tfcompress.reference import reference_cnn
        >>> q = quantize_aware(reference_cnn())
        >>> sorted({type(l).__name__ for l in q.layers} & {"BatchNormalization", "QuantConv"})
        ['QuantConv']
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if activation_bits not in (8, 16):
        raise ValueError(f"activation_bits must be 8 or 16, got {activation_bits}.")
    bits = _WeightBits(weight_bits, activation_bits)
    _require_functional(model, "quantize_aware")
    if target is not None:
        from tfcompress import _tflite

        _tflite.check_target(target)
        if _targets.is_npu(target):
            from tfcompress.export._npu import warn_cpu_layers

            warn_cpu_layers(model, target)
    if isinstance(float_layers, str) and float_layers == "auto":
        float_layers = _auto_float_layers(model, sensitivity, float_budget, max_float_layers)
        if not float_layers:
            float_layers = None
    specs = _graph.layer_specs(model, float_layers, "float_layers")
    rewriter = _Rewriter(model, specs, per_channel_weights, activation_bits, keep_zeros, bits)
    inputs = _graph.new_inputs(model)  # a fixed batch (e.g. 1 for a microcontroller) is kept
    quantized_inputs = [ActivationQuantizer(num_bits=activation_bits, name=f"input_quant_{i}")(x)
                        for i, x in enumerate(inputs)]
    outputs = rewriter.rebuilder.run(model, quantized_inputs)
    bits.check_used(model)
    q = _graph.as_model(inputs, outputs, f"{model.name}_qat")
    if target is not None:
        check_weight_bits(q, "int8", target)  # before any training
    return q


def _quantizers(model: Any) -> list[ActivationQuantizer]:
    if not isinstance(model, keras.layers.Layer):
        return []
    return [layer for layer in _graph.all_layers(model) if isinstance(layer, ActivationQuantizer)]


def check_ranges_learned(model: keras.Model) -> None:
    """Raises when a quantization-aware model has activation ranges it never learned."""
    empty = [q.name for q in _quantizers(model)
             if q.initial_range is None and float(ops.convert_to_numpy(q.seen)) == 0.0]
    if empty:
        raise ValueError(
            f"The quantization-aware model has not learned activation ranges yet ({len(empty)} "
            f"quantizers, e.g. {empty[0]!r}): fit it for at least a few steps first, or, for "
            "post-training quantization, build it with "
            "tfcompress.quantization.calibrate_ranges(float_model, data)."
        )


def weight_bits(model: Any) -> dict[str, int]:
    """The weight width of each quantized weight layer of a quantization-aware model."""
    return {layer.name: layer.weight_bits for layer in _graph.all_layers(model)
            if isinstance(layer, QUANT_LAYERS) and hasattr(layer, "weight_bits")}


def four_bit_layers(model: Any) -> list[str]:
    """The layers of a quantization-aware model with 4-bit weights."""
    return [name for name, bits in weight_bits(model).items() if bits == 4]


def check_weight_bits(model: keras.Model, quantization: str, target: str) -> None:
    """One line, naming the layer, where a quantization-aware model's 4-bit weights cannot
    reach the file or run on the target."""
    four = four_bit_layers(model)
    if not four:
        return
    if quantization != "int8":
        raise ValueError(f"Layer {four[0]!r} has 4-bit weights, which only an 'int8' export "
                         f"keeps; got {quantization!r}.")
    if _targets.is_npu(target):
        raise ValueError(f"Layer {four[0]!r} has 4-bit weights, which Vela does not compile "
                         f"for {target}; build the model with weight_bits=8 for an Ethos-U "
                         "target.")
    if target == "litert-reference":
        depthwise = [layer.name for layer in _graph.all_layers(model)
                     if isinstance(layer, QuantDepthwiseConv2D) and layer.weight_bits == 4]
        if depthwise:
            original = depthwise[0].removesuffix("_quant").removesuffix("_dw")
            raise ValueError(
                f"Layer {depthwise[0]!r} has 4-bit weights, and LiteRT's reference kernels "
                "run DEPTHWISE_CONV_2D with 8-bit weights only; give it 8 bits "
                f"(weight_bits={{{original!r}: 8, ...}}) or export for 'litert' or 'tflm'.")


def activation_bits(model: Any) -> int | None:
    """The activation width a quantization-aware model simulates (8 or 16), else `None`."""
    bits = {q.num_bits for q in _quantizers(model)}
    return max(bits) if bits else None


def _auto_float_layers(model: Any, scan: Any, budget: float, max_layers: int) -> list[str]:
    """The layer names `float_layers="auto"` keeps in float, from a quantize scan."""
    if scan is None:
        raise ValueError(
            'float_layers="auto" picks layers from a sensitivity scan: pass sensitivity='
            'tfcompress.debug.sensitivity(model, data, "quantize") (or its JSON path).')
    if not hasattr(scan, "float_layers"):  # the path of a saved scan
        from tfcompress._scan import SensitivityScan

        scan = SensitivityScan.load(scan)
    if scan.technique != "quantize":
        raise ValueError(f'float_layers="auto" needs a "quantize" scan, got a '
                         f'{scan.technique!r} one.')
    from tfcompress._io import model_fingerprint

    if scan.model_fingerprint and scan.model_fingerprint != model_fingerprint(model):
        raise ValueError("The sensitivity scan was made for another model (or other weights): "
                         "scan this model.")
    return scan.float_layers(budget=budget, max_layers=max_layers)


def _known(layer: Any) -> bool:
    """True for a layer class `quantize_aware` knows how to quantize (or made itself)."""
    return augments(layer) or isinstance(
        layer, QUANT_LAYERS + PASSTHROUGH + QUANTIZE_OUTPUT + _AFFINE + (
            _L.InputLayer, _L.UpSampling2D, keras.Model) + tuple(_registry))


def float_layer_names(model: Any) -> list[str]:
    """The layers a quantization-aware model keeps in float: those with weights named in its
    `float_layers`, and the layers `quantize_aware` knew no int8 kernel for; empty for a
    model with no fake-quant at all."""
    if not is_quantize_aware(model):
        return []
    return [layer.name for layer in _graph.all_layers(model)
            if isinstance(layer, _WEIGHTED + (_L.SeparableConv1D, _L.SeparableConv2D))
            or not (_known(layer) or is_identity(layer))]


def is_identity(layer: Any) -> bool:
    """True for a layer that returns its one input unchanged (a Lambda `x * 1.0`): the
    converter removes it, so it produces no op and there is nothing to keep in float."""
    if not isinstance(layer, keras.layers.Layer) or layer.weights:
        return False
    probed = run_on_probe(layer, uniform=False)  # a layer that cannot run alone is none
    if probed is None:
        return False
    probe, out = probed
    return out.shape == probe.shape and np.array_equal(out, probe)


def is_quantize_aware(model: Any) -> bool:
    """True when `model` holds fake-quant layers made by `quantize_aware`."""
    return bool(_quantizers(model))


def count_params(model: Any) -> int:
    """The number of values a model exports: for a quantize-aware model, without its
    quantizers' ranges and its sparsity masks (bookkeeping that training needs and the
    `.tflite` does not hold); for any other model, `model.count_params()`.

    Examples:
        >>> from tfcompress.reference import reference_cnn
        >>> model = reference_cnn()
        >>> count_params(quantize_aware(model)) < model.count_params()  # BatchNorm folded
        True
    """
    layers = _graph.all_layers(model)
    bookkeeping = set()
    for layer in layers:
        if isinstance(layer, ActivationQuantizer):
            bookkeeping.update(id(w) for w in layer.weights)
        elif getattr(layer, "keep_zeros", False) and hasattr(layer, "mask"):
            bookkeeping.add(id(layer.mask))
    if not bookkeeping:
        return model.count_params()
    return int(sum(np.prod(w.shape, dtype=np.int64) for w in model.weights
                   if id(w) not in bookkeeping))

