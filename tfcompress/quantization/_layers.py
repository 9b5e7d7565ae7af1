"""Fake-quant Keras layers that simulate TFLite's int8 kernels during training.

Written with `keras.ops` and `keras.quantizers` only, so they run on every Keras 3 backend; on
TensorFlow, `keras.quantizers.fake_quant_with_min_max_vars` lowers to the FakeQuant ops that the
TFLite converter reads its quantization parameters from.
"""

import keras
import numpy as np
from keras import ops
from keras.quantizers import fake_quant_with_min_max_vars

_PACKAGE = "tfcompress"


@keras.saving.register_keras_serializable(_PACKAGE)
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor per-tensor with a range learned by a moving average.

    While training, each batch's min and max update the range (the first batch sets it); for
    the first `warmup_steps` batches the tensor passes through unquantized so that early, noisy
    ranges do not disturb training. At inference the learned range is used as it is. The range
    always contains 0, as TFLite requires.

    Args:
        num_bits: 8 (asymmetric, as TFLite int8 activations) or 16 (symmetric, as the int16x8
            mode). Defaults to `8`.
        ema_decay: Weight of the old range in the moving average. Defaults to `0.99`.
        warmup_steps: Batches that only observe the range. Defaults to `20`.
        initial_range: `(min, max)` to start from instead of the first batch, e.g. a fixed
            output range. Defaults to `None`.
    """

    def __init__(self, num_bits: int = 8, ema_decay: float = 0.99, warmup_steps: int = 20,
                 initial_range: tuple[float, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        if num_bits not in (8, 16):
            raise ValueError(f"num_bits must be 8 or 16, got {num_bits}.")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
        self.num_bits = num_bits
        self.ema_decay = ema_decay
        self.warmup_steps = int(warmup_steps)
        self.initial_range = None if initial_range is None else tuple(initial_range)
        # Set by `tfcompress.quantization.calibrate_ranges` while it collects statistics: a
        # callable that receives each (eager) input. Not part of the config.
        self.observer = None
        # Cleared by sensitivity scans to run this quantization point in float (read when the
        # call is traced or run eagerly). Not part of the config.
        self.simulate = True

    def build(self, input_shape):
        lo, hi = self.initial_range or (0.0, 0.0)
        self.range_min = self.add_weight(shape=(), initializer=keras.initializers.Constant(lo),
                                         trainable=False, name="range_min", aggregation="mean")
        self.range_max = self.add_weight(shape=(), initializer=keras.initializers.Constant(hi),
                                         trainable=False, name="range_max", aggregation="mean")
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen",
                                    aggregation="only_first_replica")

    def _quantize(self, x, lo, hi):
        lo = ops.minimum(lo, 0.0)
        hi = ops.maximum(hi, lo + 1e-6)
        hi = ops.maximum(hi, 0.0)
        if self.num_bits == 16:
            bound = ops.maximum(-lo, hi)
            return fake_quant_with_min_max_vars(x, -bound, bound, num_bits=16, narrow_range=True)
        return fake_quant_with_min_max_vars(x, lo, hi, num_bits=8, narrow_range=False)

    def set_range(self, low: float, high: float) -> None:
        """Fixes the range (e.g. from calibration statistics) and marks it as learned."""
        self.range_min.assign(float(min(low, 0.0)))
        self.range_max.assign(float(max(high, 0.0)))
        self.seen.assign(max(1.0, float(ops.convert_to_numpy(self.seen))))

    def call(self, x, training=None):
        if self.observer is not None:
            self.observer(ops.convert_to_numpy(x))
            return x
        if not training:
            if not self.simulate:
                return x
            return self._quantize(x, self.range_min, self.range_max)
        batch_min = ops.stop_gradient(ops.min(x))
        batch_max = ops.stop_gradient(ops.max(x))
        first = ops.logical_and(ops.equal(self.seen, 0.0), self.initial_range is None)
        d = self.ema_decay
        lo = ops.where(first, batch_min, d * self.range_min + (1.0 - d) * batch_min)
        hi = ops.where(first, batch_max, d * self.range_max + (1.0 - d) * batch_max)
        self.range_min.assign(lo)
        self.range_max.assign(hi)
        self.seen.assign(self.seen + 1.0)
        quantized = self._quantize(x, lo, hi)
        return ops.where(self.seen > self.warmup_steps, quantized, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits, "ema_decay": self.ema_decay,
                "warmup_steps": self.warmup_steps, "initial_range": self.initial_range}


# Clipping candidates for 4-bit weights, as fractions of the largest magnitude: with 15
# levels, rounding error dominates, and clipping a few outliers buys finer steps for the rest.
_CLIP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def _weight_bound(w, reduce: tuple[int, ...] | None, num_bits: int):
    """The symmetric range of weights: their largest magnitude for 8 bits; for fewer, the
    clipping among `_CLIP_FRACTIONS` of it with the least squared rounding error (per
    channel where `reduce` leaves one axis). Constant for the gradient."""
    w = ops.stop_gradient(w)
    top = ops.maximum(ops.max(ops.abs(w), axis=reduce), 1e-8)
    if num_bits >= 8:
        return top
    levels = 2 ** (num_bits - 1) - 1
    keep = reduce is not None
    best, best_err = top, None
    for frac in _CLIP_FRACTIONS:
        bound = top * frac
        step = (ops.expand_dims(bound, [i for i in reduce]) if keep else bound) / levels
        q = ops.clip(ops.round(w / step), -levels, levels) * step
        err = ops.mean(ops.square(q - w), axis=reduce)
        if best_err is None:
            best_err = err
            continue
        better = err < best_err
        best = ops.where(better, bound, best)
        best_err = ops.where(better, err, best_err)
    return best


def _fake_quant_weights(w, axis: int | None, num_bits: int = 8):
    """Symmetric, narrow-range weight fake-quant: per channel along `axis`, or per tensor."""
    if axis is None:
        bound = _weight_bound(w, None, num_bits)
        return fake_quant_with_min_max_vars(w, -bound, bound, num_bits=num_bits,
                                            narrow_range=True)
    axis = axis % len(w.shape)
    reduce = tuple(i for i in range(len(w.shape)) if i != axis)
    bound = _weight_bound(w, reduce, num_bits)
    return fake_quant_with_min_max_vars(w, -bound, bound, num_bits=num_bits, narrow_range=True,
                                        axis=axis)


_FUSABLE = ("linear", "relu", "relu6")
# Weight widths the layers simulate. With 4 bits the converter stores the kernel as packed
# INT4 (two values a byte), which LiteRT and TFLite Micro unpack for CONV_2D,
# DEPTHWISE_CONV_2D and FULLY_CONNECTED.
WEIGHT_BITS = (4, 8)


def _as_tuple(value) -> int | tuple[int, ...]:
    """Keras restores tuples from a config as lists; the conv ops want ints or tuples."""
    if np.ndim(value) == 0:
        return int(value)
    return tuple(int(v) for v in value)


def _apply_fused(x, activation: str):
    if activation == "relu":
        return ops.relu(x)
    if activation == "relu6":
        return ops.relu6(x)
    return x


class _QuantWeightLayer(keras.layers.Layer):
    """Shared parts of the quantized conv/dense layers: weights, sparsity mask, output quant."""

    def __init__(self, activation: str = "linear", per_channel: bool = True,
                 keep_zeros: bool = False, activation_bits: int = 8, weight_bits: int = 8,
                 **kwargs):
        super().__init__(**kwargs)
        if activation not in _FUSABLE:
            raise ValueError(f"fused activation must be one of {_FUSABLE}, got {activation!r}.")
        if weight_bits not in WEIGHT_BITS:
            raise ValueError(f"Layer {self.name!r}: weight_bits must be 4 or 8, got "
                             f"{weight_bits!r}.")
        if weight_bits == 4 and activation_bits != 8:
            raise ValueError(f"Layer {self.name!r}: 4-bit weights run with 8-bit activations "
                             f"only (TFLite has no int16 kernels for int4 weights), got "
                             f"activation_bits={activation_bits}.")
        self.weight_bits = int(weight_bits)
        self.activation = activation
        self.per_channel = per_channel
        self.keep_zeros = keep_zeros
        self.activation_bits = activation_bits
        self.output_quantizer = ActivationQuantizer(num_bits=activation_bits,
                                                    name="output_quantizer")
        self.simulate = True  # see ActivationQuantizer.simulate; covers the weights
        # While set, `rounding(w, axis)` replaces the weights' fake-quant (AdaRound learns
        # each weight's rounding direction through it); never saved.
        self.rounding = None

    def _quant_weights(self, w, axis):
        if self.rounding is not None:
            return self.rounding(w, axis)
        return _fake_quant_weights(w, axis, self.weight_bits) if self.simulate else w

    def _make_weights(self, kernel_shape, channels):
        self.kernel = self.add_weight(shape=kernel_shape, initializer="glorot_uniform",
                                      name="kernel")
        self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")
        if self.keep_zeros:
            self.mask = self.add_weight(shape=kernel_shape, initializer="ones", trainable=False,
                                        name="mask")

    def _kernel(self):
        k = self.kernel
        if self.keep_zeros:
            k = k * self.mask  # pruned weights stay exactly zero through QAT
        return k

    def _finish(self, y, training):
        y = _apply_fused(ops.add(y, self.bias), self.activation)
        return self.output_quantizer(y, training=training)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation,
                "per_channel": self.per_channel, "keep_zeros": self.keep_zeros,
                "activation_bits": self.activation_bits, "weight_bits": self.weight_bits}


@keras.saving.register_keras_serializable(_PACKAGE)
class QuantConv(_QuantWeightLayer):
    """Conv1D/Conv2D (BatchNorm folded in, activation fused) with fake-quantized weights."""

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid",
                 dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = tuple(int(v) for v in np.atleast_1d(kernel_size))
        self.strides = _as_tuple(strides)
        self.padding = padding
        self.dilation_rate = _as_tuple(dilation_rate)

    def build(self, input_shape):
        self._make_weights(self.kernel_size + (input_shape[-1], self.filters), self.filters)
        self.output_quantizer.build(None)

    def call(self, x, training=None):
        k = self._quant_weights(self._kernel(), -1 if self.per_channel else None)
        y = ops.conv(x, k, strides=self.strides, padding=self.padding,
                     dilation_rate=self.dilation_rate)
        return self._finish(y, training)

    def compute_output_shape(self, input_shape):
        return keras.ops.conv(keras.KerasTensor(input_shape),
                              keras.KerasTensor(self.kernel_size + (input_shape[-1],
                                                                    self.filters)),
                              strides=self.strides, padding=self.padding,
                              dilation_rate=self.dilation_rate).shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation_rate": self.dilation_rate}


@keras.saving.register_keras_serializable(_PACKAGE)
class QuantDepthwiseConv2D(_QuantWeightLayer):
    """DepthwiseConv2D (BatchNorm folded in, activation fused) with per-channel weights."""

    def __init__(self, kernel_size, depth_multiplier: int = 1, strides=1,
                 padding: str = "valid", dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = tuple(int(v) for v in np.atleast_1d(kernel_size))
        self.depth_multiplier = depth_multiplier
        self.strides = _as_tuple(strides)
        self.padding = padding
        self.dilation_rate = _as_tuple(dilation_rate)

    def build(self, input_shape):
        channels = input_shape[-1]
        self._make_weights(self.kernel_size + (channels, self.depth_multiplier),
                           channels * self.depth_multiplier)
        self.output_quantizer.build(None)

    def call(self, x, training=None):
        k = self._kernel()
        shape = k.shape
        # TFLite quantizes a depthwise kernel per output channel (in * multiplier).
        flat = ops.reshape(k, tuple(shape[:-2]) + (shape[-2] * shape[-1],))
        flat = self._quant_weights(flat, -1 if self.per_channel else None)
        k = ops.reshape(flat, shape)
        y = ops.depthwise_conv(x, k, strides=self.strides, padding=self.padding,
                               dilation_rate=self.dilation_rate)
        return self._finish(y, training)

    def compute_output_shape(self, input_shape):
        return keras.ops.depthwise_conv(
            keras.KerasTensor(input_shape),
            keras.KerasTensor(self.kernel_size + (input_shape[-1], self.depth_multiplier)),
            strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate).shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "depth_multiplier": self.depth_multiplier, "strides": self.strides,
                "padding": self.padding, "dilation_rate": self.dilation_rate}


@keras.saving.register_keras_serializable(_PACKAGE)
class QuantDense(_QuantWeightLayer):
    """Dense (BatchNorm folded in, activation fused) with fake-quantized weights.

    TFLite's FULLY_CONNECTED kernel takes per-tensor weight scales by default, so weights are
    quantized per tensor unless `per_channel=True` is asked for explicitly.
    """

    def __init__(self, units: int, **kwargs):
        kwargs.setdefault("per_channel", False)
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self._make_weights((input_shape[-1], self.units), self.units)
        self.output_quantizer.build(None)

    def call(self, x, training=None):
        k = self._quant_weights(self._kernel(), -1 if self.per_channel else None)
        return self._finish(ops.matmul(x, k), training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(_PACKAGE)
class QuantConvTranspose(_QuantWeightLayer):
    """Conv2DTranspose (BatchNorm folded in, activation fused) with fake-quantized weights.

    The kernel is `(height, width, filters, input channels)`, as Keras keeps it. Weights are
    quantized per tensor: the converter reads a per-channel FakeQuant along the last axis,
    which is the input-channel axis here.
    """

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid",
                 output_padding=None, dilation_rate=1, **kwargs):
        kwargs["per_channel"] = False
        if kwargs.get("weight_bits", 8) != 8:
            raise ValueError(f"Layer {kwargs.get('name')!r}: TRANSPOSE_CONV has no int4 "
                             "kernel in LiteRT or TFLite Micro; keep its weights at 8 bits.")
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = tuple(int(v) for v in np.atleast_1d(kernel_size))
        self.strides = _as_tuple(strides)
        self.padding = padding
        self.output_padding = None if output_padding is None else _as_tuple(output_padding)
        self.dilation_rate = _as_tuple(dilation_rate)

    def build(self, input_shape):
        self._make_weights(self.kernel_size + (self.filters, input_shape[-1]), self.filters)
        self.output_quantizer.build(None)

    def _transpose(self, x, k):
        return ops.conv_transpose(x, k, strides=self.strides, padding=self.padding,
                                  output_padding=self.output_padding,
                                  dilation_rate=self.dilation_rate)

    def call(self, x, training=None):
        k = self._quant_weights(self._kernel(), None)
        return self._finish(self._transpose(x, k), training)

    def compute_output_shape(self, input_shape):
        return self._transpose(keras.KerasTensor(input_shape), keras.KerasTensor(
            self.kernel_size + (self.filters, input_shape[-1]))).shape

    def get_config(self):
        config = {**super().get_config(), "filters": self.filters,
                  "kernel_size": self.kernel_size, "strides": self.strides,
                  "padding": self.padding, "output_padding": self.output_padding,
                  "dilation_rate": self.dilation_rate}
        config.pop("per_channel")
        return config


@keras.saving.register_keras_serializable(_PACKAGE)
class QuantScalarOp(keras.layers.Layer):
    """`x * c` or `x + c` with a fake-quantized constant `c`, then an output quantizer.

    TFLite's int8 MUL and ADD need both operands quantized; the constant of a `Rescaling`
    layer or of an expression like `x + 3.0` gets its own (exact for a scalar) int8 range.

    Args:
        op: `"multiply"` or `"add"`.
        value: The constant: a number or a list broadcast over the last axis.
        activation_bits: Bits of the output quantizer. Defaults to `8`.
    """

    def __init__(self, op: str, value: "float | list[float]", activation_bits: int = 8,
                 **kwargs):
        super().__init__(**kwargs)
        if op not in ("multiply", "add"):
            raise ValueError(f"op must be 'multiply' or 'add', got {op!r}.")
        self.op = op
        self.value = np.asarray(value, dtype=np.float32).tolist()
        self.activation_bits = activation_bits
        self.output_quantizer = ActivationQuantizer(num_bits=activation_bits,
                                                    name="output_quantizer")

    def build(self, input_shape):
        self.output_quantizer.build(None)

    def call(self, x, training=None):
        c = np.asarray(self.value, dtype=np.float32).reshape(-1)
        lo, hi = min(0.0, float(c.min())), max(0.0, float(c.max()))
        if hi - lo < 1e-6:
            hi = lo + 1e-6
        qc = fake_quant_with_min_max_vars(ops.convert_to_tensor(c), lo, hi, num_bits=8,
                                          narrow_range=False)
        y = ops.multiply(x, qc) if self.op == "multiply" else ops.add(x, qc)
        return self.output_quantizer(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "op": self.op, "value": self.value,
                "activation_bits": self.activation_bits}


QUANT_LAYERS = (ActivationQuantizer, QuantConv, QuantConvTranspose, QuantDepthwiseConv2D,
                QuantDense, QuantScalarOp)
