import keras
import numpy as np
import pytest
from keras import ops

from tests.conftest import litert_predict
from tfcompress import pruning as P
from tfcompress import quantization as Q
from tfcompress.export import to_tflite
from tfcompress.reference import compile_for_classification, reference_cnn


def _channel_prune(model, x, y, sparsity=0.5, **kw):
    compile_for_classification(model)
    cb = P.Pruning(P.ConstantSparsity(sparsity, begin_step=0, frequency=4),
                   granularity="channel", **kw)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    return model


def _zero_channels(layer):
    k = ops.convert_to_numpy(layer.kernel)
    return int(np.all(k.reshape(-1, k.shape[-1]) == 0, axis=0).sum())


def test_channel_keep_removes_the_lowest_scores():
    assert P.channel_keep(np.array([3.0, 1.0, 2.0, 4.0]), 0.5).tolist() == [True, False, False,
                                                                             True]
    assert P.channel_keep(np.array([1.0, 2.0]), 1.0).tolist() == [False, True]  # keeps one
    keeps = P.global_channel_keep([np.array([1.0, 1.0, 4.0]), np.array([5.0, 5.0])], 0.4)
    assert [k.tolist() for k in keeps] == [[False, False, True], [True, True]]


def test_round_to_keeps_multiples():
    scores = np.arange(24, dtype=float)
    assert P.channel_keep(scores, 0.4, round_to=8).sum() == 16  # 14.4 -> 16
    assert P.channel_keep(scores, 0.9, round_to=8).sum() == 8  # never below round_to
    assert P.channel_keep(scores[:6], 0.5, round_to=8).sum() == 6  # never above n
    keeps = P.global_channel_keep([scores, scores[:16]], 0.5, round_to=8)
    assert all(k.sum() % 8 == 0 for k in keeps)
    assert keeps[0][-8:].all()  # the highest scores are the ones kept
    with pytest.raises(ValueError, match="round_to"):
        P.Pruning(P.ConstantSparsity(0.5), granularity="channel", round_to=0)


def test_reference_cnn_groups():
    graph = P.ChannelGraph(reference_cnn())
    by_name = {g.name: g for g in graph.groups}
    conv1 = by_name["conv1"]
    assert conv1.prunable and [m.name for m, _ in conv1.members] == ["bn1", "dw2", "bn2"]
    assert [c.name for c, _ in conv1.consumers] == ["pw2"]
    assert [c.name for c, _ in by_name["conv4"].consumers] == ["fc1"]  # through Flatten
    assert not by_name["logits"].prunable
    assert "model output" in by_name["logits"].reasons[0]


@pytest.mark.parametrize("criterion", sorted(P.CRITERIA))
@pytest.mark.parametrize("scope", P.SCOPES)
def test_channel_pruning_then_shrink_is_exact(trained_cnn, mnist, criterion, scope):
    model = keras.models.clone_model(trained_cnn)
    model.set_weights(trained_cnn.get_weights())
    _channel_prune(model, mnist.x_train[:512], mnist.y_train[:512], criterion=criterion,
                   scope=scope)
    zeros = {name: _zero_channels(model.get_layer(name)) for name in ("conv1", "pw2", "conv4",
                                                                      "fc1")}
    if scope == "layer":
        assert zeros == {"conv1": 8, "pw2": 16, "conv4": 32, "fc1": 64}
    else:
        total = 16 + 32 + 64 + 128
        assert sum(zeros.values()) == pytest.approx(total / 2, abs=2)
    assert _zero_channels(model.get_layer("logits")) == 0
    # coupled parameters are masked with the channels
    dead = np.all(ops.convert_to_numpy(model.get_layer("conv1").kernel).reshape(-1, 16) == 0, 0)
    assert np.all(ops.convert_to_numpy(model.get_layer("bn1").gamma)[dead] == 0)
    assert np.all(ops.convert_to_numpy(model.get_layer("bn2").beta)[dead] == 0)

    small, report = P.shrink(model, return_report=True)
    x = mnist.x_test[:200]
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5, rtol=0)
    assert small.get_layer("conv1").filters == 16 - zeros["conv1"]
    assert small.get_layer("dw2").kernel.shape[-2] == 16 - zeros["conv1"]
    assert small.get_layer("fc1").kernel.shape[0] == 9 * (64 - zeros["conv4"])
    assert report.params_after == small.count_params() < 0.5 * report.params_before
    assert report.macs_after < 0.5 * report.macs_before
    assert report.left_whole == (("logits", "reaches the model output"),)


def test_shrunk_model_saves_fine_tunes_and_exports_int8(trained_cnn, mnist, tmp_path):
    model = keras.models.clone_model(trained_cnn)
    model.set_weights(trained_cnn.get_weights())
    _channel_prune(model, mnist.x_train, mnist.y_train)
    small = P.shrink(model)
    compile_for_classification(small)
    small.fit(mnist.x_train, mnist.y_train, epochs=1, batch_size=64, verbose=0)
    small.save(tmp_path / "small.keras")
    loaded = keras.saving.load_model(tmp_path / "small.keras")
    acc = np.mean(loaded.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert acc > 0.9
    q = Q.quantize_aware(loaded)
    compile_for_classification(q, 1e-4)
    q.fit(mnist.x_train[:1024], mnist.y_train[:1024], epochs=1, batch_size=64, verbose=0)
    exported = to_tflite(q, tmp_path / "small.tflite", "int8")
    assert exported.integer_only
    x = mnist.x_test[:200]
    agree = np.mean(litert_predict(exported.path, x).argmax(1)
                    == q.predict(x, verbose=0).argmax(1))
    assert agree >= 0.97


def _block_model():
    """Residual Add, squeeze-excite Multiply, Concatenate, and a Sigmoid that blocks pruning."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    a = keras.layers.ReLU(name="a_relu")(a)
    b = keras.layers.Conv2D(8, 1, name="b")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    res = keras.layers.Add(name="res")([a, b])
    se = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(res)
    se = keras.layers.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(se)
    gated = keras.layers.Multiply(name="gate")([res, se])
    c = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c")(gated)
    cat = keras.layers.Concatenate(name="cat")([gated, c])
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="d")(cat)
    e = keras.layers.Conv2D(5, 1, activation="sigmoid", name="e")(d)
    f = keras.layers.Conv2D(7, 1, name="f")(e)
    x = keras.layers.GlobalAveragePooling2D()(f)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


def test_coupled_groups_and_blocked_groups():
    graph = P.ChannelGraph(_block_model())
    by_name = {g.name: g for g in graph.groups}
    merged = by_name["a+b+se_expand"]  # Add joins a and b; Multiply joins the SE gate
    assert merged.prunable and merged.size == 8
    members = {m.name for m, _ in merged.members}
    assert {"a_bn", "b_bn", "d"} <= members
    assert by_name["c"].prunable and "d" in {m.name for m, _ in by_name["c"].members}
    assert not by_name["e"].prunable and "not zero" in by_name["e"].reasons[0]
    assert by_name["se_reduce"].prunable


def test_shrink_respects_residual_concat_and_se(mnist):
    model = _block_model()
    x = np.random.default_rng(0).normal(size=(64, 12, 12, 3)).astype("float32")
    y = np.arange(64) % 3
    _channel_prune(model, x, y, sparsity=0.5)
    small, report = P.shrink(model, return_report=True)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5, rtol=0)
    assert small.get_layer("a").filters == small.get_layer("b").filters == 4
    assert small.get_layer("se_expand").filters == 4
    assert small.get_layer("d").kernel.shape[-2] == 4 + small.get_layer("c").filters
    assert small.get_layer("e").filters == 5  # left whole: sigmoid(0) != 0 reaches f
    assert any(group == "e" for group, _ in report.left_whole)


def test_channel_pruning_under_mirrored_strategy(trained_cnn, mnist, mirrored):
    with mirrored.scope():
        model = keras.models.clone_model(trained_cnn)
        model.set_weights(trained_cnn.get_weights())
        compile_for_classification(model)
    cb = P.Pruning(P.ConstantSparsity(0.5, begin_step=0, frequency=4), granularity="channel")
    model.fit(mnist.x_train[:1024], mnist.y_train[:1024], epochs=1, batch_size=64, verbose=0,
              callbacks=[cb])
    assert _zero_channels(model.get_layer("conv4")) == 32
    small = P.shrink(model)
    # Keras 3 keeps BatchNormalization moving statistics per replica, so compare against a
    # single-device copy holding the weights shrink read (those of the first replica).
    single = keras.models.clone_model(model)
    single.set_weights(model.get_weights())
    x = mnist.x_test[:64]
    np.testing.assert_allclose(small.predict(x, verbose=0), single.predict(x, verbose=0),
                               atol=1e-5, rtol=0)


def test_channel_pruning_errors():
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    compile_for_classification(dense_only)
    cb = P.Pruning(P.ConstantSparsity(0.5), granularity="channel")
    with pytest.raises(ValueError, match="reaches the model output"):
        dense_only.fit(np.ones((8, 4)), np.zeros(8), verbose=0, callbacks=[cb])
    with pytest.raises(ValueError, match="criterion"):
        P.Pruning(P.ConstantSparsity(0.5), granularity="channel", criterion="random")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.ones((1, 4)))
    with pytest.raises(TypeError, match="functional API"):
        P.shrink(sub)


@pytest.mark.slow
def test_mobilenet_v2_residual_groups_and_exact_shrink():
    from tfcompress.reference import reference_mobilenet_v2

    keras.utils.set_random_seed(0)
    model = reference_mobilenet_v2((64, 64, 3))
    graph = P.ChannelGraph(model)
    merged = {g.name for g in graph.groups if len(g.producers) > 1}
    assert "block_3_project+block_4_project+block_5_project" in merged  # residual stage
    assert all(g.prunable for g in graph.groups if g.producers and g.name != "logits")
    x = np.random.default_rng(0).uniform(size=(16, 64, 64, 3)).astype("float32")
    model.compile(keras.optimizers.SGD(0.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(16) % 6, epochs=1, batch_size=16, verbose=0, callbacks=[
        P.Pruning(P.ConstantSparsity(0.4, begin_step=0), granularity="channel")])
    small, report = P.shrink(model, return_report=True)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5, rtol=0)
    assert report.mac_ratio < 0.5
    # every block of a residual stage keeps the same width
    widths = {small.get_layer(f"block_{i}_project").filters for i in (3, 4, 5)}
    assert len(widths) == 1


def test_a_registered_layer_class_passes_channels_through():
    class Mish(keras.layers.Layer):  # a per-channel activation channel pruning does not know
        def call(self, x):
            return x * ops.tanh(ops.softplus(x))

    def build():
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(16, 3, name="conv_a")(inputs)
        h = Mish(name="mish")(h)
        h = keras.layers.Conv2D(8, 3, name="conv_b")(h)
        out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(h))
        return keras.Model(inputs, out)

    model = build()
    group = next(g for g in P.ChannelGraph(model).groups if "conv_a" in g.name)
    assert not group.prunable and any("'mish'" in r for r in group.reasons)
    P.register_layer(Mish, "keeps_zero")
    try:
        group = next(g for g in P.ChannelGraph(model).groups if "conv_a" in g.name)
        assert group.prunable
        x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype("float32")
        y = np.random.default_rng(1).integers(0, 2, 64)
        _channel_prune(model, x, y)
        small, report = P.shrink(model, return_report=True)
        assert small.get_layer("conv_a").filters < 16
        np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                                   atol=1e-4)
    finally:
        from tfcompress.pruning._channels import _registry

        _registry.pop(Mish)
    with pytest.raises(ValueError, match="kind must be one of"):
        P.register_layer(Mish, "sometimes")


def test_separable_convs_are_pruned_and_shrunk_exactly():
    """Xception and NASNet are built of SeparableConv2D: its pointwise half produces the
    channels, its depthwise half (no bias) reads them."""
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(16, 3, name="stem")(inputs)
    h = keras.layers.SeparableConv2D(24, 3, depth_multiplier=2, name="sep1")(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(h))
    h = keras.layers.SeparableConv2D(32, 3, name="sep2", activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(
        keras.layers.GlobalAveragePooling2D()(h)))
    groups = {g.name: g for g in P.ChannelGraph(model).groups}
    assert groups["sep1"].prunable and groups["stem"].prunable
    x = np.random.default_rng(0).normal(size=(64, 12, 12, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 64)
    _channel_prune(model, x, y)
    small, report = P.shrink(model, return_report=True)
    widths = {r.name: r.channels_after for r in report.layers}
    assert widths["stem"] < 16 and widths["sep1"] < 24 and widths["sep2"] < 32
    assert small.get_layer("sep1").depthwise_kernel.shape[-2] == widths["stem"]
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-4)
