import keras
import numpy as np
import pytest

from tests.conftest import litert_predict
from tfcompress.export import to_tflite
from tfcompress.lowrank import factorize
from tfcompress.reference import compile_for_classification


def _convnet():
    """Strided, dilated and 'same'/'valid' convs, a nested Sequential and a shared Dense."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((20, 20, 3))
    x = keras.layers.Conv2D(24, 3, strides=2, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(32, (3, 5), dilation_rate=(2, 1), padding="valid", name="c2")(x)
    block = keras.Sequential([keras.layers.Conv2D(32, 3, padding="same", name="c3"),
                              keras.layers.ReLU()], name="block")
    x = block(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    shared = keras.layers.Dense(32, activation="relu", name="shared")
    x = shared(x)
    x = shared(x)
    outputs = keras.layers.Dense(5, name="out")(x)
    return keras.Model(inputs, outputs)


FULL = {"c1": 24, "c2": 32, "c3": 32, "shared": 32}


@pytest.mark.parametrize("conv_mode", ["channel", "spatial"])
def test_full_rank_factorization_computes_the_same_function(conv_mode):
    model = _convnet()
    x = np.random.default_rng(1).normal(size=(4, 20, 20, 3)).astype("float32")
    ranks = {name: 10_000 for name in FULL}  # clipped to each layer's full rank
    new, report = factorize(model, ranks=ranks, conv_mode=conv_mode, return_report=True)
    assert {r.name for r in report.layers if r.factorized} == set(FULL)
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-4, rtol=1e-4)
    # the shared Dense stays shared: one pair of layers, used twice
    assert sum(layer.name.startswith("shared") for layer in new.layers) == 2
    assert [layer.name for layer in model.layers][-1] == "out"  # the input is untouched
    if conv_mode == "spatial":
        assert tuple(new.get_layer("c2_lowrank").kernel_size) == (3, 1)
        assert tuple(new.get_layer("c2").kernel_size) == (1, 5)


def test_rank_choice_and_left_alone_layers():
    model = _convnet()
    new, report = factorize(model, energy=0.6, min_params=1000, return_report=True)
    by_name = {r.name: r for r in report.layers}
    assert "min_params" in by_name["c1"].status  # 648 weights
    assert "out" in by_name and "min_params" in by_name["out"].status
    for r in report.layers:
        if r.factorized:
            assert r.energy >= 0.6 and r.params_after < r.params_before
            assert r.macs_after < r.macs_before
    assert report.params_before == model.count_params()
    assert report.params_after == new.count_params() < model.count_params()
    assert "model:" in str(report) and report.to_dict()["params_after"] == new.count_params()
    # a rank that saves nothing is left alone (c3 full rank 32 of 288 x 32)
    _, whole = factorize(model, rank_ratio=1.0, return_report=True)
    assert not any(r.factorized for r in whole.layers)
    assert all("saves nothing" in r.status or "min_params" in r.status for r in whole.layers)
    # layers= selects
    _, only = factorize(model, rank_ratio=0.25, layers="c*", min_params=0, return_report=True)
    assert {r.name for r in only.layers if r.factorized} <= {"c1", "c2", "c3"}


def test_bad_arguments():
    model = _convnet()
    with pytest.raises(ValueError, match="rank_ratio=0.25"):
        factorize(model)
    with pytest.raises(ValueError, match="not both"):
        factorize(model, rank_ratio=0.5, energy=0.9)
    with pytest.raises(ValueError, match="not a layer"):
        factorize(model, ranks={"nope": 3})
    with pytest.raises(ValueError, match="cannot be factorized"):
        factorize(model, ranks={"block": 3})
    with pytest.raises(ValueError, match="conv_mode"):
        factorize(model, rank_ratio=0.5, conv_mode="tucker")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.ones((1, 4)))
    with pytest.raises(TypeError, match="functional API"):
        factorize(sub, rank_ratio=0.5)


def test_factorized_reference_cnn_fine_tunes_saves_and_exports_int8(trained_cnn, mnist,
                                                                    tmp_path):
    base = np.mean(trained_cnn.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    new, report = factorize(trained_cnn, rank_ratio=0.25, return_report=True)
    assert report.param_ratio <= 0.6
    compile_for_classification(new)
    keras.utils.set_random_seed(0)
    new.fit(mnist.x_train, mnist.y_train, epochs=1, batch_size=64, verbose=0)
    acc = np.mean(new.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert acc >= base - 0.015
    new.save(tmp_path / "f.keras")
    loaded = keras.saving.load_model(tmp_path / "f.keras")
    x = mnist.x_test[:100]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), new.predict(x, verbose=0),
                               atol=1e-5)
    exported = to_tflite(loaded, tmp_path / "f.tflite", "int8", mnist.x_train[:200])
    assert exported.integer_only
    agree = np.mean(litert_predict(exported.path, x).argmax(1)
                    == new.predict(x, verbose=0).argmax(1))
    assert agree >= 0.95
