"""Pruning and QAT on every Keras backend the training code claims: TensorFlow and JAX, each in
its own process (the backend is fixed when Keras is imported)."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

BACKENDS = ["tensorflow", pytest.param("jax", marks=pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"))]

_COUNT_MASKED = """
import json
import numpy as np
import keras
from keras import ops
import tfcompress.pruning as P

rng = np.random.default_rng(0)
x = rng.normal(size=(1280, 20)).astype("float32")
y = rng.integers(0, 3, 1280)
inputs = keras.Input((20,))
h = keras.layers.Dense(256, activation="relu")(inputs)
h = keras.layers.Dense(256, activation="relu")(h)
model = keras.Model(inputs, keras.layers.Dense(3)(h))
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
pruning = P.Pruning(P.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=100, frequency=10),
                    layers=keras.layers.Dense)
counts = []

class CountMaskedNonZeros(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        getattr(self.model, "jax_state_sync", lambda: None)()  # JAX keeps state aside
        counts.append(sum(
            int(np.sum((ops.convert_to_numpy(m) == 0) & (ops.convert_to_numpy(t.variable) != 0)))
            for t, m in zip(pruning._targets, pruning._masks)))

model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[pruning, CountMaskedNonZeros()])
print(json.dumps({"backend": keras.backend.backend(), "counts": counts,
                  "sparsity": P.sparsity_report(model).sparsity}))
"""


def _run(code: str, backend: str, cwd=None) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pruned_weights_stay_zero_after_every_batch(backend):
    result = json.loads(_run(_COUNT_MASKED, backend))
    assert result["backend"] == backend
    assert len(result["counts"]) == 120
    assert max(result["counts"]) == 0  # the masks hold inside the compiled step
    assert result["sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_model_pruned_and_quantized_under_jax_exports_int8_from_tensorflow(tmp_path, mnist):
    import keras

    from tfcompress.export import to_tflite

    line = _run("""
        import json
        import keras
        import numpy as np
        import tfcompress as tfc
        import tfcompress.pruning as P
        from tfcompress.quantization import quantize_aware

        keras.utils.set_random_seed(0)
        ds = tfc.data.load("mnist")
        model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
        model.fit(ds.x_train, ds.y_train, epochs=1, batch_size=64, verbose=0, callbacks=[
            P.Pruning(P.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=40, frequency=10))])
        q = quantize_aware(model)
        q.compile(optimizer=keras.optimizers.Adam(1e-4), loss=model.loss, metrics=["accuracy"])
        q.fit(ds.x_train, ds.y_train, epochs=1, batch_size=64, verbose=0)
        q.save("qat_jax.keras")
        acc = float(np.mean(q.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))
        print(json.dumps({"backend": keras.backend.backend(), "accuracy": acc,
                          "sparsity": P.sparsity_report(model).sparsity}))
    """, "jax", cwd=tmp_path)
    result = json.loads(line)
    assert result["backend"] == "jax" and result["accuracy"] > 0.8
    assert result["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert keras.backend.backend() == "tensorflow"
    q = keras.saving.load_model(tmp_path / "qat_jax.keras")
    report = to_tflite(q, tmp_path / "qat_jax.tflite", "int8", verify_data=mnist.x_test)
    assert report.integer_only and report.agreement >= 0.97
    kernel = np.asarray(q.get_layer("fc1_quant").kernel) * np.asarray(
        q.get_layer("fc1_quant").mask)
    assert np.mean(kernel == 0) >= 0.45  # pruned weights stayed zero through QAT under JAX


_BEST_EPOCH = """
import json
import numpy as np
import keras
from tfcompress import _training

keras.utils.set_random_seed(0)  # a fixed start: the model learns the rule well above chance
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 4, 5, 1)).astype("float32")
y = (x[:, 0, 0, 0] > 0).astype("int32")
inputs = keras.Input((4, 5, 1))
model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
    keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))))
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x, y, epochs=20, verbose=0)
before = _training.evaluate(model, (x, y))
start = [w.copy() for w in model.get_weights()]
model.compile(keras.optimizers.SGD(50.0), "sparse_categorical_crossentropy")
best = _training.BestOnValidation((x, y), "top1", first_epoch=0, patience=2)
model.fit(x, y, epochs=6, verbose=0, callbacks=[best])
same = all(np.array_equal(a, b) for a, b in zip(start, model.get_weights()))
print(json.dumps({"backend": keras.backend.backend(), "best_epoch": best.best_epoch,
                  "scores": len(best.scores), "same": same, "before": before,
                  "after": _training.evaluate(model, (x, y))}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_fine_tuning_puts_back_its_best_epoch_on_every_backend(backend):
    result = json.loads(_run(_BEST_EPOCH, backend))
    assert result["backend"] == backend
    assert result["best_epoch"] == 0 and result["scores"] <= 3  # a wrecking rate: stopped
    assert result["same"] and result["after"] == result["before"] > 0.6  # chance: 0.5
