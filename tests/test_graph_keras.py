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


def _zoo():
    """A shared layer, a keras.ops node, a nested model with two outputs, two outputs."""
    inner_in = keras.Input((6,))
    a = keras.layers.Dense(5, name="inner_a")(inner_in)
    backbone = keras.Model(inner_in, [a, keras.layers.ReLU(name="inner_relu")(a)],
                           name="backbone")
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(6, name="shared")
    h = shared(shared(inputs) + 3.0)
    x1, x2 = backbone(h)
    head = keras.layers.Dense(4, name="head")(x2)
    relu = keras.layers.ReLU(name="head_relu")(head)
    return keras.Model(inputs, [keras.layers.Add(name="sum")([x1, x1]), relu], name="zoo")


def test_rebuild_copies_every_kind_of_node_and_keeps_shared_layers_shared():
    import numpy as np

    model = _zoo()
    copy = _graph.rebuild(model, lambda node, args, kwargs: None, "copy")
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    for a, b in zip(model.predict(x, verbose=0), copy.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert _graph.call_count(model.get_layer("shared")) == 2
    assert _graph.call_count(copy.get_layer("shared")) == 2  # one copy, still shared
    assert copy.get_layer("shared") is not model.get_layer("shared")
    assert {"inner_a", "inner_relu"} <= {layer.name for layer in copy.layers}  # inlined
    assert {"inner_a", "inner_relu", "shared"} <= {x.name for x in _graph.all_layers(model)}
    assert _graph.output_shape(model.get_layer("head")) == (None, 4)


def test_alias_and_skip_fuse_two_nodes_into_one():
    import numpy as np

    model = _zoo()
    graph = _graph.Graph(model)

    def visit(node, args, kwargs):
        if getattr(node.operation, "name", "") != "head":
            return None
        relu_node = graph.single_consumer(node.outputs[0])
        fused = keras.layers.Dense(4, activation="relu", name="head_fused")
        y = fused(args[0])
        fused.set_weights(node.operation.get_weights())
        rebuilder.alias(relu_node.outputs[0], y)
        rebuilder.skip(relu_node)
        return y

    rebuilder = _graph.Rebuilder(visit)
    inputs = _graph.new_inputs(model)
    fused = _graph.as_model(inputs, rebuilder.run(model, inputs), "fused")
    names = {layer.name for layer in fused.layers}
    assert "head_fused" in names and "head_relu" not in names
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0)[1], fused.predict(x, verbose=0)[1],
                               atol=1e-6)
    assert graph.producer(model.get_layer("head_relu").input).operation.name == "head"


def test_name_producer_renames_a_keras_ops_node():
    inputs = keras.Input((3,))
    y = keras.ops.add(inputs, 1.0)
    _graph.name_producer(y, "tf.math.add")
    model = keras.Model(inputs, y)
    assert [getattr(node.operation, "name", "") for node in _graph.nodes(model)
            if not node.is_input] == ["tf.math.add"]


def test_an_adapted_normalization_survives_copies_rebuilds_and_restores(trained_cnn):
    """Keras' `set_weights` leaves an adapted `Normalization` computing with the statistics
    it was built with (only loading a file calls `finalize_state`); every copy tfcompress
    makes goes through `_graph.set_weights`, which finishes the state."""
    import numpy as np

    from tfcompress import _training
    from tfcompress.lowrank import factorize
    from tfcompress.pruning import shrink

    rng = np.random.default_rng(0)
    x = (rng.uniform(0, 255, (64, 28, 28, 1))).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    plain = keras.layers.Normalization.from_config(norm.get_config())
    plain.build(x.shape)
    plain.set_weights(norm.get_weights())
    assert not np.allclose(plain(x[:2]), norm(x[:2]), atol=1e-3)  # Keras' own behaviour
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, trained_cnn(norm(inputs)))
    assert np.allclose(_graph.clone_layer(norm)(x[:2]), norm(x[:2]), atol=1e-4)
    reference = model.predict(x[:8], verbose=0)
    for made in (factorize(model, rank_ratio=1.0), shrink(model), _training.copy_model(model)):
        assert np.allclose(made.predict(x[:8], verbose=0), reference, atol=1e-4)
