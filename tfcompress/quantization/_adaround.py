"""AdaRound: each weight rounded up or down as the layer's output needs, not to the nearest
level (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", 2020).

Rounding every weight to its nearest level minimizes each weight's error, not the layer's:
at 4 bits the errors of a channel's weights add up in its output. For each weight layer in
graph order, a continuous variable per weight chooses between the level below and the one
above (a rectified sigmoid, pushed to 0 or 1 by an annealed regularizer), fitted so that
the layer's output on the inputs it gets in the quantized model (the layers before it
already rounded) matches the float model's output. The levels stay those of the layer's own
fake-quant (the same per-channel range), so the exported file stores the chosen integers.

The fit is a plain `model.fit` of a small Keras model per layer: it runs on any backend.
"""

import keras
import numpy as np
from keras import ops

from tfcompress import _graph
from tfcompress.quantization._layers import ActivationQuantizer, _QuantWeightLayer, _weight_bound

# The rectified sigmoid's stretch and the regularizer's schedule, from the paper.
_ZETA, _GAMMA = 1.1, -0.1
_LAMBDA = 0.01
_BETA = (20.0, 2.0)
_WARMUP = 0.2  # share of the steps fitted without the regularizer
STEPS = 1000  # per layer
BATCH = 32
LEARNING_RATE = 1e-2


def _rectified(v):
    """The stretched sigmoid of the rounding variables, clipped to [0, 1]: the share of a
    level added to the level below."""
    return ops.clip(ops.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


class _Grid:
    """One layer's weights (as its fake-quant sees them) on their quantization grid."""

    def __init__(self, w: np.ndarray, axis: int | None, bits: int):
        self.shape, self.levels = w.shape, 2 ** (bits - 1) - 1
        reduce = None if axis is None else tuple(range(w.ndim - 1))  # channels last
        bound = ops.convert_to_numpy(_weight_bound(ops.convert_to_tensor(w), reduce, bits))
        self.step = (np.asarray(bound, np.float32) / self.levels).astype(np.float32)
        self.floor = np.floor(w / self.step).astype(np.float32)
        self.nonzero = (w != 0).astype(np.float32)  # zeros (pruned weights) stay zero
        rest = np.clip(w / self.step - self.floor, 0.0, 0.999)
        self.init = -np.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1.0).astype(np.float32)
        # The largest weight of each channel keeps its nearest level (the top of the grid),
        # so that the fake-quant finds the same range in the rounded weights.
        nearest = np.clip(np.round(w / self.step), -self.levels, self.levels)
        flat = np.abs(w).reshape(-1, w.shape[-1]) if axis is not None else np.abs(w).ravel()
        self.top = np.zeros(flat.shape, bool)
        if axis is not None:
            self.top[np.argmax(flat, axis=0), np.arange(flat.shape[1])] = True
        else:
            self.top[np.argmax(flat)] = True
        self.top = self.top.reshape(w.shape)
        self.nearest = nearest.astype(np.float32)

    def soft(self, v):
        """Weights with the rounding `v` chooses, differentiable in `v`."""
        up = _rectified(v) * self.nonzero
        return ops.clip(self.floor + up, -self.levels, self.levels) * self.step

    def hard(self, v: np.ndarray) -> np.ndarray:
        up = (ops.convert_to_numpy(_rectified(v)) >= 0.5) * self.nonzero
        k = np.clip(self.floor + up, -self.levels, self.levels)
        k = np.where(self.top, self.nearest, k)
        return (k * self.step).astype(np.float32)


class _Rounding(keras.layers.Layer):
    """Runs `layer` with its weights rounded as a trainable variable chooses."""

    def __init__(self, layer: _QuantWeightLayer, grid: _Grid, **kwargs):
        super().__init__(**kwargs)
        self.layer, self.grid = layer, grid
        self.v = self.add_weight(shape=grid.shape, name="rounding",
                                 initializer=keras.initializers.Constant(grid.init))
        self.beta = self.add_weight(shape=(), initializer="zeros", trainable=False, name="beta")

    def call(self, h):
        self.layer.rounding = lambda w, axis: self.grid.soft(self.v)
        try:
            y = self.layer(h, training=False)
        finally:
            self.layer.rounding = None
        up = _rectified(self.v)
        regular = ops.sum(1.0 - ops.power(ops.abs(2.0 * up - 1.0), ops.maximum(self.beta,
                                                                                1.0)))
        self.add_loss(_LAMBDA * ops.where(self.beta > 0, regular, 0.0))
        return y


class _Anneal(keras.callbacks.Callback):
    """No regularizer for the first `_WARMUP` of the steps, then beta from 20 down to 2."""

    def __init__(self, rounding: _Rounding, steps: int):
        super().__init__()
        self.rounding, self.steps, self.step = rounding, steps, 0

    def on_train_batch_begin(self, batch, logs=None):
        start = _WARMUP * self.steps
        if self.step >= start:
            done = (self.step - start) / max(self.steps - start, 1)
            self.rounding.beta.assign(_BETA[1] + (_BETA[0] - _BETA[1]) * (1.0 - done))
        self.step += 1


def _reconstruction(target, output):
    """Squared error summed over channels, averaged over images and positions."""
    return ops.mean(ops.sum(ops.square(target - output), axis=-1))


def _view(layer: _QuantWeightLayer, h: np.ndarray) -> tuple[np.ndarray, int | None]:
    """The weights as the layer's fake-quant sees them (a depthwise kernel flattened to one
    channel axis) and the channel axis (`None`: per tensor)."""
    seen: dict = {}

    def record(w, axis):
        seen["w"], seen["axis"] = ops.convert_to_numpy(w), axis
        return w

    layer.rounding = record
    try:
        layer(h[:1], training=False)
    finally:
        layer.rounding = None
    return seen["w"], seen["axis"]


def _set_float(q: keras.Model, on: bool) -> None:
    """Every quantization point of `q` (activations, weights) off (`on`) or back on."""
    for layer in _graph.all_layers(q):  # sub-layers too: each layer's output quantizer
        if isinstance(layer, (ActivationQuantizer, _QuantWeightLayer)):
            layer.simulate = not on


def adaround(q: keras.Model, x: np.ndarray, steps: int | None = None,
             batch_size: int = BATCH, seed: int = 0) -> list[str]:
    """Learns the rounding of every weight layer of a calibrated quantization-aware model, in
    place (its activation ranges set first): `steps` fitting steps a layer (default
    `STEPS`) on batches of `batch_size` of the images `x`. Returns the layers rounded."""
    steps = STEPS if steps is None else steps
    weighted = [layer for layer in _graph.all_layers(q) if isinstance(layer, _QuantWeightLayer)]
    inputs = q.inputs[0] if len(q.inputs) == 1 else q.inputs
    x = np.asarray(x, np.float32)
    original = {id(layer): ops.convert_to_numpy(layer.kernel) for layer in weighted}
    for i, layer in enumerate(weighted):
        h = np.asarray(keras.Model(inputs, layer.input).predict(x, batch_size=64, verbose=0))
        # The float model's output of this layer, on float inputs: the layers before it
        # (already rounded) get their original weights back meanwhile.
        earlier = weighted[:i]
        rounded = [ops.convert_to_numpy(w.kernel) for w in earlier]
        for w in earlier:
            w.kernel.assign(original[id(w)])
        _set_float(q, True)
        try:
            target = np.asarray(keras.Model(inputs, layer.output).predict(
                x, batch_size=64, verbose=0))
        finally:
            _set_float(q, False)
            for w, kernel in zip(earlier, rounded, strict=True):
                w.kernel.assign(kernel)
        w, axis = _view(layer, h)
        grid = _Grid(w, axis, layer.weight_bits)
        rounding = _Rounding(layer, grid)
        fitter = keras.Sequential([keras.Input(h.shape[1:]), rounding])
        layer.output_quantizer.simulate = False
        trainable, layer.trainable = layer.trainable, False
        try:
            keras.utils.set_random_seed(seed)
            fitter.compile(keras.optimizers.Adam(LEARNING_RATE), _reconstruction)
            per_epoch = max(1, -(-len(h) // batch_size))
            epochs = max(1, -(-steps // per_epoch))
            fitter.fit(h, target, batch_size=batch_size, epochs=epochs, verbose=0,
                       callbacks=[_Anneal(rounding, epochs * per_epoch)])
        finally:
            layer.trainable = trainable
            layer.output_quantizer.simulate = True
        chosen = grid.hard(ops.convert_to_numpy(rounding.v))
        layer.kernel.assign(chosen.reshape(tuple(layer.kernel.shape)))
    return [layer.name for layer in weighted]
