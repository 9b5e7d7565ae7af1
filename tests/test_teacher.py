"""Fine-tuning with a teacher (`tfcompress._teacher`): the soft targets travel with the labels,
the model follows them on every backend, and its own compile settings come back after."""

import json

import keras
import numpy as np
import pytest

from tests.pruning.test_backends import BACKENDS, _run
from tfcompress import _teacher, _training
from tfcompress.data._parts import ArrayPart, StreamPart

# A classifier trained on two signs, then fine-tuned on labels that are all wrong: with the
# teacher alone (alpha=0) it must keep the teacher's predictions; on the labels alone it must
# learn the wrong ones.
_FOLLOW = """
import json
import numpy as np
import keras
from tfcompress import _teacher, _training
from tfcompress.data._parts import ArrayPart

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 2, 4, 1)).astype("float32")
y = ((x[:, 0, 0, 0] > 0).astype("int32") + (x[:, 0, 1, 0] > 0)).astype("int32")
model = keras.Sequential([keras.Input((2, 4, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(3, activation="softmax")])
_training.default_compile(model, 1e-2)
model.fit(x, y, epochs=5, verbose=0)
wrong = ArrayPart(x, (y + 1) % 3)
agree = {}
for name, teacher in (("teacher", model), ("labels", None)):
    student = _training.copy_model(model)
    with _teacher.following(teacher, student, wrong, alpha=0.0) as train:
        _training.fit(student, train, epochs=5, batch_size=64, verbose=0)
    agree[name] = float(np.mean(student.predict(x, verbose=0).argmax(1)
                                == model.predict(x, verbose=0).argmax(1)))
    agree[name + "_metrics"] = student.get_compile_config()["metrics"]
    agree[name + "_steps"] = int(student.optimizer.iterations)
agree["accuracy"] = _training.accuracy(model, x, y)
agree["backend"] = keras.backend.backend()
print(json.dumps(agree))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_model_follows_the_teacher_on_every_backend(backend):
    r = json.loads(_run(_FOLLOW, backend))
    assert r["backend"] == backend and r["accuracy"] > 0.85
    assert r["teacher"] >= 0.95  # the wrong labels weigh nothing at alpha=0
    assert r["labels"] <= 0.3    # without a teacher they are learned
    # its own loss and metrics are back, and the optimizer kept its state (steps go on)
    assert r["teacher_metrics"] == r["labels_metrics"] == ["accuracy"]
    assert r["teacher_steps"] == r["labels_steps"] == 80 + 40  # copies go on from 80


def _classifier(logits: bool) -> keras.Model:
    return keras.Sequential([keras.Input((2, 4, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(3, activation=None if logits else "softmax")])


@pytest.mark.parametrize("logits", [True, False])
def test_the_loss_is_the_models_own_at_alpha_one_and_zero_when_it_matches_the_teacher(logits):
    model = _classifier(logits)
    x = np.random.default_rng(1).normal(size=(16, 2, 4, 1)).astype("float32")
    labels = np.arange(16) % 3
    out = model.predict(x, verbose=0)
    base = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    y = np.concatenate([labels[:, None].astype("float32"),
                        np.asarray(out if logits else np.log(out))], axis=1)
    own = _teacher.soft_target_loss(base, 1, True, logits, alpha=1.0)(y, out)
    assert np.allclose(keras.ops.convert_to_numpy(own),
                       keras.ops.convert_to_numpy(base.call(labels, out)), atol=1e-5)
    kd = _teacher.soft_target_loss(base, 1, True, logits, alpha=0.0)(y, out)
    assert np.abs(keras.ops.convert_to_numpy(kd)).max() < 1e-4  # same outputs: no divergence
    shifted = np.roll(y[:, 1:], 1, axis=1)  # another teacher: a divergence
    far = _teacher.soft_target_loss(base, 1, True, logits, alpha=0.0)(
        np.concatenate([y[:, :1], shifted], axis=1), out)
    assert keras.ops.convert_to_numpy(far).min() > 0


def test_what_a_teacher_cannot_guide_trains_on_its_labels():
    model = _classifier(True)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.zeros((8, 2, 4, 1), np.float32)
    y = np.arange(8) % 3
    assert _teacher.why_not(model, model, ArrayPart(x, y)) is None
    stream = StreamPart(lambda: iter([(x, y)]))
    assert "stream" in _teacher.why_not(model, model, stream)
    with _teacher.following(model, model, stream) as train:
        assert train is stream  # unchanged, and the loss too
    assert "teacher" not in str(model.loss)
    wide = keras.Sequential([keras.Input((2, 4, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(4)])
    assert "classes" in _teacher.why_not(wide, model, ArrayPart(x, y))
    assert "class labels" in _teacher.why_not(model, model, ArrayPart(x, x))


def test_prune_and_qat_take_the_model_as_teacher(trained_cnn, mnist):
    from tfcompress.pruning import prune
    from tfcompress.quantization import train_quantized

    model, ds = trained_cnn, mnist
    pruned, result = prune(model, ds, sparsity=0.5, epochs=1, teacher=model)
    assert result.sparsity_after == pytest.approx(0.5, abs=0.02)
    assert result.accuracy_after > result.accuracy_before - 0.05
    assert pruned.get_compile_config()["loss"] == model.get_compile_config()["loss"]
    q, qr = train_quantized(pruned, ds, epochs=1, teacher=model)
    assert qr.accuracy_qat > qr.accuracy_float - 0.05


def test_the_teacher_guides_training_under_mirrored_strategy(mirrored, trained_cnn, mnist):
    x, y = mnist.x_train[:512], mnist.y_train[:512]
    with mirrored.scope():
        student = _training.copy_model(trained_cnn)
    with _teacher.following(trained_cnn, student, ArrayPart(x, (y + 1) % 10), alpha=0.0) as t:
        _training.fit(student, t, epochs=2, batch_size=64, verbose=0)
    same = np.mean(student.predict(x, verbose=0).argmax(1)
                   == trained_cnn.predict(x, verbose=0).argmax(1))
    assert same >= 0.95  # the wrong labels weigh nothing: the teacher's predictions stay
    assert _training.accuracy(student, mnist.x_test, mnist.y_test) > 0.9
