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
