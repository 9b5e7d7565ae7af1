"""A teacher while fine-tuning: a model's outputs on the training images become soft targets
beside the labels (knowledge distillation, Hinton et al., 2015), for the fine-tuning inside
`prune`, `train_quantized`, `factorize` steps and the pipeline.

The teacher's outputs are computed once, in order, and travel with the labels (one array of
`[labels, teacher logits]` per sample), so the model keeps training with its own `fit`, its
callbacks (pruning masks) and any `tf.distribute` strategy; only the loss changes while the
block runs. Parts read again in the same order (arrays, image folders) can carry them; a
stream cannot, and is trained on its labels alone.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

TEMPERATURE = 4.0
ALPHA = 0.5  # weight of the labels' loss; the teacher's soft targets get the rest


def _as_logits(outputs: Any, logits: bool) -> Any:
    """Logits (up to a constant per sample) from a classifier's outputs."""
    return outputs if logits else ops.log(ops.clip(outputs, 1e-7, 1.0))


def soft_target_loss(base: Any, label_width: int, sparse: bool, student_logits: bool,
                     temperature: float = TEMPERATURE, alpha: float = ALPHA):
    """The per-sample loss of a model trained on `[labels, teacher logits]` targets:
    `alpha` times its own loss `base` on the labels plus `(1 - alpha) * T**2` times the
    Kullback-Leibler divergence of its softened outputs from the teacher's."""
    own = base.call if isinstance(base, keras.losses.Loss) else keras.losses.get(base)

    def loss(y_true, y_pred):
        labels = y_true[:, 0] if sparse else y_true[:, :label_width]
        teacher = y_true[:, label_width:]
        hard = own(labels, y_pred)
        t = ops.softmax(teacher / temperature, axis=-1)
        log_t = ops.log_softmax(teacher / temperature, axis=-1)
        log_s = ops.log_softmax(_as_logits(y_pred, student_logits) / temperature, axis=-1)
        soft = ops.sum(t * (log_t - log_s), axis=-1) * temperature ** 2
        return alpha * hard + (1.0 - alpha) * soft

    return loss


def why_not(teacher: keras.Model, model: keras.Model, part: Any) -> str | None:
    """Why `teacher` cannot guide `model`'s training on `part`, or `None` when it can."""
    outs = [getattr(m, "outputs", None) or [] for m in (teacher, model)]
    if len(outs[0]) != 1 or len(outs[1]) != 1:
        return "the teacher and the model must each have one output"
    shapes = [tuple(o[0].shape) for o in outs]
    if len(shapes[0]) != 2 or shapes[0] != shapes[1] or (shapes[0][1] or 0) < 2:
        return f"the outputs are not scores of 2 or more classes ({shapes[0]}, {shapes[1]})"
    if part.label_max() is None:
        return "the targets are not class labels"
    from tfcompress.data._parts import Part

    if type(part).with_targets is Part.with_targets:
        return f"{part.name} is a stream, which is not read twice in the same order"
    if not getattr(model, "loss", None) or not model.get_compile_config():
        return "the model has no saved loss to add the teacher's to"
    return None


def targets(teacher: keras.Model, part: Any, batch_size: int = 256) -> np.ndarray:
    """`[labels, teacher logits]` for every sample of `part`, in its order."""
    from tfcompress._training import outputs_logits

    logits = outputs_logits(teacher)
    rows = []
    for x, y in part.batches(batch_size):
        pred = np.asarray(teacher.predict(np.asarray(x, np.float32), verbose=0), np.float32)
        labels = np.asarray(y, np.float32).reshape(len(x), -1)
        rows.append(np.concatenate(
            [labels, np.asarray(_as_logits(pred, logits), np.float32)], axis=1))
    return np.concatenate(rows)


@contextlib.contextmanager
def following(teacher: keras.Model | None, model: keras.Model, part: Any,
              temperature: float = TEMPERATURE, alpha: float = ALPHA) -> Iterator[Any]:
    """While the block runs, `model` (compiled) is trained against `teacher`'s soft targets
    as well as its labels: yields the training part to `fit` on (`part` itself when there is
    no teacher or it cannot guide, see `why_not`). The model's own compile settings, with
    its optimizer and that optimizer's state, are put back afterwards."""
    if teacher is None or why_not(teacher, model, part) is not None:
        yield part
        return
    from tfcompress._training import outputs_logits

    y = targets(teacher, part)
    classes = int(model.outputs[0].shape[-1])
    width = y.shape[1] - classes
    config = keras.saving.deserialize_keras_object(model.get_compile_config())
    optimizer = model.optimizer
    model.compile(optimizer=optimizer, loss=soft_target_loss(
        model.loss, width, sparse=width == 1,
        student_logits=outputs_logits(model), temperature=temperature, alpha=alpha))
    try:
        yield part.with_targets(y)
    finally:
        config["optimizer"] = optimizer
        model.compile(**config)
