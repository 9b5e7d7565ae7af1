"""Pins the private Keras behaviour that `tfcompress._graph` relies on, so that a Keras release
that changes it fails here first."""

import keras
import pytest

from tfcompress import _graph


def test_copying_loaded_code_rebuilds_lambdas_and_restores_safe_mode():
    layer = keras.layers.Lambda(lambda t: t * 2.0)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.layers.Lambda.from_config(layer.get_config())
    with _graph.copying_loaded_code():
        copy = keras.layers.Lambda.from_config(layer.get_config())
    assert float(copy(keras.ops.ones((1,)))[0]) == 2.0
    with pytest.raises(ValueError, match="safe_mode"):  # safe mode is back
        keras.layers.Lambda.from_config(layer.get_config())
