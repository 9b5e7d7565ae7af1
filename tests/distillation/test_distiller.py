import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tests.conftest import litert_predict
from tfcompress import pruning as P
from tfcompress import quantization as Q
from tfcompress.distillation import Distiller
from tfcompress.export import to_tflite
from tfcompress.reference import reference_cnn


def _linear(seed, softmax=False, name=None):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((5,)),
                              keras.layers.Dense(4, activation="softmax" if softmax else None)],
                             name=name)
    model.set_weights([rng.normal(size=(5, 4)).astype("float32"),
                       rng.normal(size=4).astype("float32")])
    return model


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _compiled(teacher, student, **kw):
    d = Distiller(teacher, student, **kw)
    d.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    return d


def test_loss_is_hinton_soft_targets_mixed_with_hard_labels():
    teacher, student = _linear(0), _linear(1)
    x = np.random.default_rng(2).normal(size=(16, 5)).astype("float32")
    y = np.arange(16) % 4
    T, alpha = 3.0, 0.25
    d = _compiled(teacher, student, temperature=T, alpha=alpha)
    loss = float(ops.convert_to_numpy(d.compute_loss(x, y, student(x), training=False)))

    zt, zs = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    pt, ps = _softmax(zt / T), _softmax(zs / T)
    soft = np.mean(np.sum(pt * np.log(pt / ps), -1)) * T**2
    hard = np.mean(-np.log(_softmax(zs)[np.arange(16), y]))
    assert loss == pytest.approx(alpha * hard + (1 - alpha) * soft, rel=1e-4)


def test_softmax_teacher_and_student_give_the_logit_loss():
    x = np.random.default_rng(3).normal(size=(8, 5)).astype("float32")
    y = np.zeros(8, int)
    logits = _compiled(_linear(0), _linear(1), alpha=0.0)
    probs = Distiller(_linear(0, softmax=True), _linear(1, softmax=True), alpha=0.0)
    probs.compile("adam")  # default hard loss follows the student's softmax output
    a = logits.compute_loss(x, y, logits.student(x), training=False)
    b = probs.compute_loss(x, y, probs.student(x), training=False)
    assert float(ops.convert_to_numpy(a)) == pytest.approx(float(ops.convert_to_numpy(b)),
                                                           rel=1e-4)


def test_bad_arguments_are_refused_with_the_fix():
    t, s = _linear(0), _linear(1)
    with pytest.raises(ValueError, match=r"from_logits=False.*from_logits=True"):
        Distiller(t, s).compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="alpha"):
        Distiller(t, s, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Distiller(t, s, temperature=0)
    with pytest.raises(TypeError, match="keras.Model"):
        Distiller(t, "student.keras")
    wide = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7)])
    with pytest.raises(ValueError, match="output"):
        Distiller(t, wide)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        Distiller(reference_cnn(), reference_cnn(width=0.5), feature_layers=("relu3", "nope"))
    with pytest.raises(ValueError, match="same resolution"):
        Distiller(reference_cnn(), reference_cnn(width=0.5), feature_layers=("relu1", "relu3"))


@pytest.fixture(scope="module")
def teacher(trained_cnn):
    # A copy: the Distiller freezes its teacher, and other tests train the shared model.
    copy = keras.models.clone_model(trained_cnn)
    copy.set_weights(trained_cnn.get_weights())
    return copy


def test_distillation_trains_the_student_and_leaves_the_teacher_alone(teacher, mnist):
    before = [w.copy() for w in teacher.get_weights()]
    keras.utils.set_random_seed(1)
    d = _compiled(teacher, reference_cnn(width=0.5, name="student"))
    history = d.fit(mnist.x_train, mnist.y_train, epochs=2, batch_size=64,
                    verbose=0)
    assert {"student_loss", "distillation_loss", "accuracy"} <= set(history.history)
    for a, b in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # evaluate reports the student's metrics
    result = d.evaluate(mnist.x_test, mnist.y_test, verbose=0, return_dict=True)
    student_acc = np.mean(d.student.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert result["accuracy"] == pytest.approx(student_acc, abs=1e-6)
    assert student_acc > 0.85
    # the teacher's knowledge shows: the student agrees with it on most test images
    agree = np.mean(d.predict(mnist.x_test, verbose=0).argmax(1)
                    == teacher.predict(mnist.x_test, verbose=0).argmax(1))
    assert agree > 0.85


def test_precomputed_teacher_outputs_give_the_same_loss(teacher, mnist):
    x, y = mnist.x_train[:64], mnist.y_train[:64]
    d = _compiled(teacher, reference_cnn(width=0.5), precompute_teacher=True,
                  feature_layers=("relu3", "relu3"))
    packed = d._with_teacher_outputs(x, 64)
    y_pred = d.student(x, training=False)
    live = d.compute_loss(x, y, y_pred, training=False)
    cached = d.compute_loss(packed, y, y_pred, training=False)
    assert float(ops.convert_to_numpy(cached)) == pytest.approx(
        float(ops.convert_to_numpy(live)), rel=1e-5)
    d.fit(x, y, epochs=1, batch_size=32, verbose=0, validation_split=0.25)
    with pytest.raises(ValueError, match="one array"):
        d.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)


def test_feature_distillation_trains_the_projection(teacher, mnist):
    d = _compiled(teacher, reference_cnn(width=0.5), feature_layers=("relu3", "relu3"),
                  feature_weight=0.5)
    assert d.feature_projection.kernel.shape == (16, 32)
    before = ops.convert_to_numpy(d.feature_projection.kernel).copy()
    d.fit(mnist.x_train[:256], mnist.y_train[:256], epochs=1, batch_size=64, verbose=0)
    assert not np.allclose(before, ops.convert_to_numpy(d.feature_projection.kernel))
    same = _compiled(teacher, reference_cnn(), feature_layers=("relu3", "relu3"))
    assert same.feature_projection is None


def test_pruning_callback_prunes_the_student_only(teacher, mnist):
    d = _compiled(teacher, reference_cnn(width=0.5))
    cb = P.Pruning(P.ConstantSparsity(0.5, begin_step=0, frequency=4))
    d.fit(mnist.x_train[:512], mnist.y_train[:512], epochs=1, batch_size=64, verbose=0,
          callbacks=[cb])
    report = P.sparsity_report(d.student, prune_depthwise=False, min_weights=1024)
    assert report.weights and all(abs(w.sparsity - 0.5) < 0.01 for w in report.weights)
    assert np.mean(ops.convert_to_numpy(teacher.get_layer("fc1").kernel) == 0) < 0.01


def test_quantize_aware_student_distills_and_exports_int8(teacher, mnist, tmp_path):
    keras.utils.set_random_seed(2)
    student = Q.quantize_aware(reference_cnn(width=0.5))
    d = _compiled(teacher, student)
    d.fit(mnist.x_train[:2000], mnist.y_train[:2000], epochs=2, batch_size=64, verbose=0)
    report = to_tflite(d.student, tmp_path / "student.tflite", "int8")
    assert report.integer_only
    x = mnist.x_test[:200]
    agree = np.mean(litert_predict(report.path, x).argmax(1)
                    == d.student.predict(x, verbose=0).argmax(1))
    assert agree >= 0.97


def test_mirrored_strategy(teacher, mnist, mirrored):
    keras.utils.set_random_seed(3)
    with mirrored.scope():
        d = _compiled(teacher, reference_cnn(width=0.5))
    d.fit(mnist.x_train, mnist.y_train, epochs=2, batch_size=64, verbose=0)
    assert np.mean(d.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test) > 0.8


def test_save_load_round_trip(teacher, tmp_path, mnist):
    d = _compiled(teacher, reference_cnn(width=0.5), temperature=2.0, alpha=0.3,
                  feature_layers=("relu3", "relu3"))
    d.fit(mnist.x_train[:128], mnist.y_train[:128], epochs=1, verbose=0)
    d.save(tmp_path / "distiller.keras")
    loaded = keras.saving.load_model(tmp_path / "distiller.keras")
    assert isinstance(loaded, Distiller) and loaded.compiled
    assert loaded.evaluate(mnist.x_test[:64], mnist.y_test[:64], verbose=0, return_dict=True
                           )["accuracy"] == pytest.approx(d.evaluate(
                               mnist.x_test[:64], mnist.y_test[:64], verbose=0,
                               return_dict=True)["accuracy"])
    assert (loaded.temperature, loaded.alpha, loaded.feature_layers) == (2.0, 0.3,
                                                                         ("relu3", "relu3"))
    x = mnist.x_test[:32]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-5)
    # the student on its own is a plain Keras model
    d.student.save(tmp_path / "student.keras")
    plain = keras.saving.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(plain.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-5)


def test_distill_helper_leaves_the_teacher_trainable(teacher, mnist):
    from tfcompress.distillation import distill

    teacher.trainable = True
    student, result = distill(teacher, reference_cnn(width=0.5), mnist, epochs=1)
    assert teacher.trainable and result.param_ratio < 0.26
    assert student.count_params() == result.student_params


def test_the_distiller_never_trains_or_changes_the_teacher(teacher, mnist):
    import copy

    teacher.trainable = True
    teacher.get_layer("conv1").trainable = False  # a partly frozen teacher keeps its flags
    flags = {layer.name: layer.trainable for layer in teacher.layers}
    weights = copy.deepcopy(teacher.get_weights())
    d = Distiller(teacher=teacher, student=reference_cnn(width=0.5), precompute_teacher=False)
    assert {layer.name: layer.trainable for layer in teacher.layers} == flags
    teacher_ids = {id(v) for v in teacher.variables}
    assert not teacher_ids & {id(v) for v in d.trainable_variables}
    assert teacher_ids <= {id(v) for v in d.non_trainable_variables}
    d.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    d.fit(mnist.x_train[:256], mnist.y_train[:256], epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(weights, teacher.get_weights(), strict=True))
    teacher.get_layer("conv1").trainable = True
