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


def test_flat_inlines_a_nested_backbone_and_layer_nodes_names_each_input():
    import numpy as np

    from tfcompress import _graph

    inner_in = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="inner_conv")(inner_in)
    backbone = keras.Model(inner_in, keras.layers.ReLU(name="inner_relu")(h), name="backbone")
    inputs = keras.Input((8, 8, 3))
    x = backbone(inputs)
    y = keras.layers.Add(name="add")([x, x * 2.0])
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(y))
    flat = _graph.flat(model)
    names = [getattr(op, "name", "") for op, _, _ in _graph.layer_nodes(flat)]
    assert {"inner_conv", "inner_relu", "add", "gap"} <= set(names)
    inputs_of = {getattr(op, "name", ""): ins for op, _, ins in _graph.layer_nodes(flat)}
    assert inputs_of["inner_relu"] == ["inner_conv"] and inputs_of["gap"] == ["add"]
    assert _graph.output_names(flat) == ["gap"]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert _graph.flat(flat) is flat  # nothing nested left
