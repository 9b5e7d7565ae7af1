import gzip

import keras
import numpy as np
import pytest
from keras import ops

import tfcompress as tfc
from tfcompress import pruning as P
from tfcompress.export import to_tflite


def _np(v):
    return ops.convert_to_numpy(v)


def _toy_data(n=256, d=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, :classes].argmax(1)).astype(np.int32)
    return x, y


def _compile(model):
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(32, activation="relu")
        self.d2 = keras.layers.Dense(3)

    def call(self, x):
        return self.d2(self.d1(x))


def _sequential():
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(3)])


def _functional():
    inputs = keras.Input((12,))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(32)(inputs)))


def _nested():
    inner = _sequential()
    inputs = keras.Input((12,))
    return keras.Model(inputs, keras.layers.Dense(3)(inner(inputs)))


@pytest.mark.parametrize("build", [_sequential, _functional, Subclassed, _nested],
                         ids=["sequential", "functional", "subclassed", "nested"])
def test_any_model_kind_reaches_the_target(build):
    x, y = _toy_data()
    model = _compile(build())
    model.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[P.Pruning(P.ConstantSparsity(0.5, frequency=4))])
    report = P.sparsity_report(model)
    assert len(report.weights) >= 2
    for w in report.weights:  # a tiny kernel can only be within one weight of the target
        assert w.sparsity == pytest.approx(0.5, abs=max(0.01, 1 / w.size)), w


def test_reference_cnn_on_mnist_reaches_80_percent_per_layer(mnist):
    keras.utils.set_random_seed(0)
    model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
    steps = 2 * 63
    cb = P.Pruning(P.PolynomialDecay(0.0, 0.8, begin_step=10, end_step=steps - 30,
                                     frequency=10))
    model.fit(mnist.x_train, mnist.y_train, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    report = P.sparsity_report(model)
    assert {w.layer for w in report.weights} == {"conv1", "dw2", "pw2", "conv4", "fc1", "logits"}
    for w in report.weights:  # by default the depthwise and the small kernels stay dense
        if w.layer in ("conv1", "dw2", "pw2"):
            assert w.sparsity == 0.0 and (w.layer == "dw2" or w.size < 1024), w
        else:
            assert abs(w.sparsity - 0.8) <= 0.01, w
    assert P.sparsity_report(model, prune_depthwise=False, min_weights=1024).sparsity == \
        pytest.approx(0.8, abs=0.01)
    acc = model.evaluate(mnist.x_test, mnist.y_test, verbose=0)[1]
    assert acc > 0.85


class _Recorder(keras.callbacks.Callback):
    """Keeps a copy of the first Dense kernel at chosen steps."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = set(steps), {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(_np(self.model.optimizer.iterations))
        if step in self.steps:
            self.seen[step] = _np(self.model.layers[0].kernel).copy()


def test_pruned_weights_stay_exactly_zero_and_the_largest_survive():
    x, y = _toy_data()
    model = _compile(_sequential())
    dense_kernel = None
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    dense_kernel = _np(model.layers[0].kernel).copy()
    start = int(_np(model.optimizer.iterations))
    rec = _Recorder([start + 1, start + 40])
    cb = P.Pruning(P.ConstantSparsity(0.7, begin_step=start + 1, end_step=start + 1))
    model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[cb, rec])
    first, last = rec.seen[start + 1], rec.seen[start + 40]
    assert np.mean(first == 0) == pytest.approx(0.7, abs=0.01)
    # 39 optimizer steps later, with no mask update in between, the same weights are zero.
    np.testing.assert_array_equal(last == 0, first == 0)
    # The weights that were pruned were the smallest of the dense kernel one step earlier.
    assert np.abs(dense_kernel[first == 0]).mean() < np.abs(dense_kernel[first != 0]).mean()


def test_plain_keras_model_after_training(tmp_path):
    x, y = _toy_data()
    model = _compile(_functional())
    model.fit(x, y, epochs=1, batch_size=32, verbose=0,
              callbacks=[P.Pruning(P.ConstantSparsity(0.6, frequency=2))])
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects needed
    assert P.sparsity_report(loaded).sparsity == pytest.approx(0.6, abs=0.01)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert all(v.constraint is None for v in model.trainable_variables)
    # Without the callback, training moves the zeros again: no mask is left behind.
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert P.sparsity_report(model).sparsity < 0.1


def test_one_instance_across_fits_continues_the_schedule():
    x, y = _toy_data()
    model = _compile(_sequential())
    cb = P.Pruning(P.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=16, frequency=2))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])  # steps 1..8
    mid = P.sparsity_report(model).sparsity
    assert 0.3 < mid < 0.8
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])  # steps 9..16
    assert P.sparsity_report(model).sparsity == pytest.approx(0.8, abs=0.01)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def test_resumes_from_backup_and_restore(tmp_path):
    x, y = _toy_data()
    schedule = P.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=30, frequency=3)
    model = _compile(_sequential())
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=4, batch_size=32, verbose=0,
                  callbacks=[P.Pruning(schedule), backup, _Interrupt()])
    resumed = _compile(_sequential())
    resumed.fit(x, y, epochs=4, batch_size=32, verbose=0,
                callbacks=[P.Pruning(schedule), keras.callbacks.BackupAndRestore(
                    str(tmp_path / "backup"))])
    assert int(_np(resumed.optimizer.iterations)) == 32  # 4 epochs of 8 steps, not 8 + 32
    assert P.sparsity_report(resumed).sparsity == pytest.approx(0.8, abs=0.01)


def test_mirrored_strategy_on_two_cpus(mirrored):
    strategy = mirrored
    assert strategy.num_replicas_in_sync == 2
    x, y = _toy_data(n=512)
    with strategy.scope():
        model = _compile(_sequential())
    rec = _Recorder([10, 30])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[P.Pruning(P.ConstantSparsity(0.75, begin_step=0, end_step=10,
                                                      frequency=5)), rec])
    np.testing.assert_array_equal(rec.seen[30] == 0, rec.seen[10] == 0)
    for w in P.sparsity_report(model).weights:
        assert w.sparsity == pytest.approx(0.75, abs=0.01)


def test_global_scope_gives_layers_different_sparsity():
    x, y = _toy_data()
    model = _compile(_sequential())
    model.fit(x, y, epochs=1, verbose=0)
    model.layers[1].kernel.assign(_np(model.layers[1].kernel) * 50.0)  # a "sensitive" layer
    model.fit(x, y, epochs=1, batch_size=32, verbose=0,
              callbacks=[P.Pruning(P.ConstantSparsity(0.5, frequency=1), scope="global")])
    report = P.sparsity_report(model)
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    first, second = report.weights
    assert second.sparsity < first.sparsity


def test_two_four_pattern_survives_training_and_int8_export(trained_cnn, mnist, tmp_path):
    pruned, result = P.prune(trained_cnn, mnist, granularity="2:4", epochs=1)
    targets = P.prunable_targets(pruned, need_n_m_axis=True, min_weights=1024)
    assert {t.layer.name for t in targets} == {"conv4", "fc1", "logits"}
    for t in targets:
        assert P.satisfies_n_m(_np(t.variable), 2, 4, t.n_m_axis), t.name
    assert set(result.report.to_dict()["layers"]) == {t.name for t in targets}
    out = to_tflite(pruned, tmp_path / "nm.tflite", "int8", representative_data=mnist)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=out.path)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    checked = 0
    for op in interp._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            w = interp.get_tensor(op["inputs"][1])  # TFLite keeps input channels last
            assert details[op["inputs"][1]]["dtype"] == np.int8
            if w.size >= 1024:  # the pruned ones; smaller kernels stay dense by default
                assert P.satisfies_n_m(w, 2, 4, axis=-1), op["op_name"]
                checked += 1
    assert checked >= 3


def test_pruned_int8_gzips_to_half_of_dense_int8(trained_cnn, mnist, tmp_path):
    pruned, result = P.prune(trained_cnn, mnist, sparsity=0.8, epochs=2)
    assert result.sparsity_after == pytest.approx(0.8, abs=0.01)
    assert P.sparsity_report(trained_cnn).sparsity < 0.01  # the input is untouched
    dense = to_tflite(trained_cnn, tmp_path / "d.tflite", "int8", representative_data=mnist)
    sparse = to_tflite(pruned, tmp_path / "s.tflite", "int8", representative_data=mnist)

    def gz(p):
        with open(p, "rb") as f:
            return len(gzip.compress(f.read(), 9))

    assert gz(sparse.path) <= 0.5 * gz(dense.path)


def test_layer_selection():
    x, y = _toy_data()
    inputs = keras.Input((12,))
    h = keras.layers.Dense(32, name="body_a")(inputs)
    h = keras.layers.Dense(32, name="body_b")(h)
    model = _compile(keras.Model(inputs, keras.layers.Dense(3, name="head")(h)))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[
        P.Pruning(P.ConstantSparsity(0.5, frequency=1), layers="body_*",
                  exclude=lambda layer: layer.name == "body_b")])
    by_layer = {w.layer: w.sparsity for w in P.sparsity_report(model).weights}
    assert by_layer["body_a"] == pytest.approx(0.5, abs=0.01)
    assert by_layer["body_b"] == 0.0 and by_layer["head"] == 0.0


def test_nothing_prunable_is_an_error():
    x, y = _toy_data()
    model = _compile(_sequential())
    with pytest.raises(ValueError, match="Nothing to prune.*Supported: Dense"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[P.Pruning(P.ConstantSparsity(0.5), layers=keras.layers.Conv2D)])
    with pytest.raises(ValueError, match=r"layers=\['no_such_layer\*'\] matches no layer"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[P.Pruning(P.ConstantSparsity(0.5), layers="no_such_layer*")])


def test_n_m_on_an_explicit_depthwise_layer_is_an_error():
    model = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.DepthwiseConv2D(3, name="dw")])
    with pytest.raises(ValueError, match="N:M sparsity does not apply"):
        P.prunable_targets(model, layers=["dw"], need_n_m_axis=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"schedule": 0.5}, TypeError, "PruningSchedule"),
        ({"scope": "model"}, ValueError, "Unknown scope"),
        ({"granularity": "2:4", "scope": "global"}, ValueError, "scope='global' has no meaning"),
        ({"granularity": "2:4"}, ValueError, "exactly 0.5, but the schedule ends at 0.8"),
        ({"granularity": "blocks"}, ValueError, "Unknown granularity"),
    ],
)
def test_argument_errors(kwargs, error, match):
    kwargs.setdefault("schedule", P.PolynomialDecay(0.0, 0.8))
    with pytest.raises(error, match=match):
        P.Pruning(**kwargs)


def test_verbose_line_and_tensorboard_summaries(tmp_path, capsys):
    x, y = _toy_data()
    model = _compile(_sequential())
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        P.Pruning(P.ConstantSparsity(0.5, frequency=1), verbose=1, log_dir=str(tmp_path))])
    out = capsys.readouterr().out
    assert "Pruning: epoch 2" in out and "achieved 0.500" in out
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_default_leaves_depthwise_and_small_kernels_dense_unless_named():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, name="stem")(inputs)  # 216 weights
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = keras.layers.Conv2D(64, 3, name="body")(h)  # 4,608 weights
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    default = {t.name for t in P.prunable_targets(model, min_weights=1024,
                                                  prune_depthwise=False)}
    assert default == {"body/kernel"}
    named = {t.name for t in P.prunable_targets(model, layers=["stem", "dw"], min_weights=1024,
                                                prune_depthwise=False)}
    assert named == {"stem/kernel", "dw/kernel"}
    cb = P.Pruning(P.ConstantSparsity(0.5))
    assert (cb.prune_depthwise, cb.min_weights) == (False, 1024)
    with pytest.raises(ValueError, match="min_weights must be an integer"):
        P.Pruning(P.ConstantSparsity(0.5), min_weights=-1)


def test_masks_computed_on_device_equal_the_numpy_reference():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=s).astype(np.float32) for s in [(3, 3, 4, 8), (50, 7), (5,)]]
    for sparsity in (0.0, 0.3, 0.8, 1.0):
        on_device = [_np(m) for m in P._masks.magnitude_masks_on_device(weights, sparsity)]
        for w, m in zip(weights, on_device, strict=True):
            np.testing.assert_array_equal(m, P.magnitude_mask(w, sparsity))
        on_device = [_np(m) for m in P._masks.magnitude_masks_on_device(weights, sparsity,
                                                                       "global")]
        for m, ref in zip(on_device, P.global_magnitude_masks(weights, sparsity), strict=True):
            np.testing.assert_array_equal(m, ref)
