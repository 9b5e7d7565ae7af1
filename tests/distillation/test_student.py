import keras
import numpy as np
import pytest

from tfcompress.distillation import StudentReport, make_student
from tfcompress.reference import reference_cnn


def _conv_pool(input_shape=(8, 8, 1), kernel=3, pool_padding="valid", pool=None, extra=None):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, kernel, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    pooled = (pool or keras.layers.MaxPooling2D)(2, padding=pool_padding, name="pool")(x)
    out = keras.layers.GlobalAveragePooling2D()(pooled)
    if extra == "branch":  # the activation is read by a second layer too
        out = keras.layers.Concatenate()([out, keras.layers.GlobalMaxPooling2D()(x)])
    return keras.Model(inputs, keras.layers.Dense(2)(out))


def test_folded_stem_computes_every_other_pixel_of_the_teacher(trained_cnn, mnist):
    student, report = make_student(trained_cnn, 0.0, fold_pooling=True, return_report=True)
    assert isinstance(report, StudentReport)
    assert student.get_layer("conv1").strides == (2, 2)
    assert "pool1" not in [layer.name for layer in student.layers]
    assert student.output_shape == trained_cnn.output_shape
    x = mnist.x_test[:8]
    teacher_relu = keras.Model(trained_cnn.input, trained_cnn.get_layer("relu1").output)(x)
    student_relu = keras.Model(student.input, student.get_layer("relu1").output)(x)
    # 'same' padding with stride 2 on an even size centres output i on input pixel 2i + 1.
    np.testing.assert_allclose(np.asarray(student_relu),
                               np.asarray(teacher_relu)[:, 1::2, 1::2, :], atol=1e-5)
    assert report.folded == (("conv1", "pool1"),)
    reasons = dict(report.not_folded)
    assert "(1, 1) kernel, smaller than the stride" in reasons["pool2"]
    assert "would give shape (4, 4, 64), the pooling (3, 3, 64)" in reasons["pool3"]
    assert report.params_after == report.params_before
    assert report.macs_after == report.macs_before - 28 * 28 * 9 * 16 * 3 // 4
    assert report.to_dict()["folded"] == [{"conv": "conv1", "pooling": "pool1"}]


def test_channels_and_folding_together(trained_cnn, mnist):
    student, report = make_student(trained_cnn, 0.5, fold_pooling=True, return_report=True)
    assert student.get_layer("conv1").filters == 8 and student.get_layer("fc1").units == 64
    assert student.get_layer("conv1").strides == (2, 2)
    assert report.param_ratio < 0.3 and report.mac_ratio < 0.25
    assert "channels removed: 50%" in str(report)
    # The kept filters are the teacher's largest (L1) ones, weights copied.
    teacher_kernel = trained_cnn.get_layer("conv1").get_weights()[0]
    kept = np.sort(np.argsort(-np.abs(teacher_kernel).sum(axis=(0, 1, 2)))[:8])
    np.testing.assert_array_equal(student.get_layer("conv1").get_weights()[0],
                                  teacher_kernel[..., kept])
    assert trained_cnn.get_layer("conv1").strides == (1, 1)  # the teacher is not modified
    assert np.isfinite(student.predict(mnist.x_test[:4], verbose=0)).all()


@pytest.mark.parametrize("case, folded", [
    ({}, True),
    ({"pool": keras.layers.AveragePooling2D}, True),
    ({"input_shape": (7, 7, 1), "pool_padding": "same"}, True),  # 4x4 either way
    ({"input_shape": (7, 7, 1)}, False),  # pooling gives 3x3, a strided conv 4x4
    ({"kernel": 1}, False),  # a 1x1 conv with stride 2 would skip three pixels in four
    ({"extra": "branch"}, False),  # the activation is also read at full resolution
])
def test_fold_only_where_it_is_sound(case, folded):
    model = _conv_pool(**case)
    if folded:
        student = make_student(model, 0.0, fold_pooling=True)
        assert student.get_layer("conv").strides == (2, 2)
        assert student.output_shape == model.output_shape
    else:
        with pytest.raises(ValueError, match="no pooling can be folded; pool: .*" + {
                "input_shape": "a strided 'conv' would give shape", "kernel": "kernel, smaller",
                "extra": "the output of 'relu' is also read elsewhere"}[next(iter(case))]):
            make_student(model, 0.0, fold_pooling=True)


def test_sequential_and_nested_models_fold():
    seq = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, padding="same"),
                            keras.layers.ReLU(), keras.layers.MaxPooling2D(),
                            keras.layers.Flatten(), keras.layers.Dense(2)])
    student, report = make_student(seq, 0.0, fold_pooling=True, return_report=True)
    assert len(report.folded) == 1 and student.output_shape == (None, 2)
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, keras.layers.Dense(3)(seq(inputs)))
    student = make_student(outer, 0.0, fold_pooling=True)
    convs = [layer for layer in student._flatten_layers() if isinstance(
        layer, keras.layers.Conv2D)]
    assert [c.strides for c in convs] == [(2, 2)]


def test_bad_input():
    model = reference_cnn()
    with pytest.raises(ValueError, match=r"in \[0, 1\); got 1.0"):
        make_student(model, 1.0)
    with pytest.raises(ValueError, match="unchanged: channels is 0. Pass channels > 0 or "
                                         "fold_pooling=True"):
        make_student(model, 0.0)

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        make_student(Sub(), 0.5)


def _global_pool_net():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(
        inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(x), name="net")


def test_an_input_downscale_student_runs_the_same_layers_at_lower_resolution():
    keras.utils.set_random_seed(0)
    teacher = _global_pool_net()
    student, report = make_student(teacher, 0.5, input_downscale=2, return_report=True)
    assert student.get_layer("input_downscale").pool_size == (2, 2)
    assert tuple(student.inputs[0].shape) == (None, 32, 32, 3)
    assert tuple(student.get_layer("stem").output.shape) == (None, 8, 8, 8)
    assert report.mac_ratio < 0.2  # a quarter of the positions, half of the channels
    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    thin = make_student(teacher, 0.5)  # the same channels kept, at full resolution
    for name in ("stem", "dw", "pw", "head"):
        for a, b in zip(thin.get_layer(name).get_weights(),
                        student.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    y = keras.layers.AveragePooling2D(2)(x)  # the thin model's layers on the pooled images
    for name in ("stem", "dw", "pw"):
        y = thin.get_layer(name)(y)
    y = thin.get_layer("head")(keras.layers.GlobalAveragePooling2D()(y))
    np.testing.assert_allclose(student.predict(x, verbose=0), np.asarray(y), atol=1e-5)
    only = make_student(teacher, 0.0, input_downscale=2)  # resolution alone is a student
    assert only.count_params() == teacher.count_params()


def test_input_downscale_refuses_what_cannot_run_at_lower_resolution():
    with pytest.raises(ValueError, match=r"cannot run at 14x14 .*fc1.*global pooling"):
        make_student(reference_cnn(), 0.5, input_downscale=2)
    with pytest.raises(ValueError, match="does not divide the input's size 32x32"):
        make_student(_global_pool_net(), 0.5, input_downscale=3)
    from tfcompress.reference import reference_unet

    with pytest.raises(ValueError, match=r"would change 'unet''s output shape"):
        make_student(reference_unet(), 0.5, input_downscale=2)
    with pytest.raises(ValueError, match="input_downscale must be a whole number >= 1"):
        make_student(_global_pool_net(), 0.5, input_downscale=0)
