"""A model as it runs at inference, for the converter: Keras' random augmentation layers
(`RandomFlip`, `RandomRotation`, ..., `GaussianNoise`, a `Sequential` of them) pass images
through unchanged at inference, but they still trace random ops (`StatelessRandomGetKeyCounter`)
that TFLite cannot run. Those that are identities at inference are replaced by a pass-through layer,
through `keras.models.clone_model` (public API), sharing every other layer and its weights.
Training keeps them: every step of a run fine-tunes with the owner's augmentation.
"""

from typing import Any

import keras
import numpy as np

# Layers that change images only while training (by class name: Keras' own, and the
# same names in user code are probed before they are replaced).
_NOISE = frozenset({"GaussianNoise", "GaussianDropout", "AlphaDropout", "AugMix", "CutMix",
                    "MixUp", "RandAugment"})


class _PassThrough(keras.layers.Layer):
    """What an augmentation layer does at inference: nothing (whatever it was called with)."""

    def call(self, inputs, *args, **kwargs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def augments(layer: Any) -> bool:
    """True for a layer (or a nested model made only of them) that augments images while
    training: Keras' `Random*` layers and noise layers."""
    name = type(layer).__name__
    if isinstance(layer, keras.Model):
        inner = [sub for sub in layer.layers if not isinstance(sub, keras.layers.InputLayer)]
        return bool(inner) and all(augments(sub) for sub in inner)
    return name.startswith("Random") or name in _NOISE


def run_on_probe(layer: Any, *, uniform: bool, **call_kwargs: Any
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """`(x, layer(x, **call_kwargs))` for two seeded random images of the layer's one input
    shape (uniform in [0, 1], or standard normal), or None when the layer has no single,
    fully known input shape or cannot run alone."""
    try:
        source = layer.input
    except (AttributeError, ValueError):  # not called yet, or called on several inputs
        return None
    if isinstance(source, (list, tuple, dict)) or not hasattr(source, "shape") or any(
            d is None for d in source.shape[1:]):
        return None
    rng, shape = np.random.default_rng(0), (2, *source.shape[1:])
    x = (rng.uniform(0, 1, shape) if uniform else rng.normal(size=shape)).astype(np.float32)
    try:
        y = keras.ops.convert_to_numpy(layer(x, **call_kwargs))
    except Exception:  # noqa: BLE001 (a layer that cannot run alone is left as it is)
        return None
    return x, y


def _identity_at_inference(layer: Any) -> bool:
    """True when `layer(x, training=False)` returns `x` on random images of its input shape."""
    if layer.weights and not isinstance(layer, keras.Model):
        return False
    probed = run_on_probe(layer, uniform=True, training=False)
    if probed is None:
        return False
    x, y = probed
    return y.shape == x.shape and bool(np.allclose(y, x, atol=1e-6))


def augmentation_layers(model: keras.Model) -> list[str]:
    """The names of the layers (or nested models) of `model` that only augment while
    training and are identities at inference."""
    return [layer.name for layer in model.layers
            if augments(layer) and _identity_at_inference(layer)]


def without_augmentation(model: Any) -> tuple[Any, set[str]]:
    """`model` with its augmentation layers passed through (the same model when it has
    none, or is not a functional or Sequential Keras model), and the names of the layers
    that went (a nested model's own layers included)."""
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs"):
        return model, set()
    try:
        names = set(augmentation_layers(model))
    except (AttributeError, ValueError):
        return model, set()
    if not names:
        return model, set()
    gone = set(names)
    for layer in model.layers:
        if layer.name in names and isinstance(layer, keras.Model):
            gone.update(sub.name for sub in layer.layers)

    def clone(layer: Any) -> Any:
        if layer.name in names:
            return _PassThrough(name=layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=clone), gone
