"""`Distiller`: Hinton-style knowledge distillation built on `keras.distillation.Distiller`.

Keras' Distiller brings the model wrapper, the frozen teacher, model checks, loss trackers and
serialization; this subclass adds what image classifiers headed for the edge need:
- a `temperature`/`alpha` signature with a correct soft-target loss. Keras'
  `LogitsDistillation()` default (`loss="kl_divergence"`, a string) compares the tempered
  *logits* without a softmax; we pass a `keras.losses.KLDivergence` instance, which Keras
  applies to softmax probabilities and scales by T^2;
- teachers and students that end in a softmax (their log-probabilities serve as logits);
- intermediate-feature distillation between one teacher and one student layer, with a learned
  linear projection when their channel counts differ;
- teacher outputs computed once before training (`precompute_teacher=True`) for data that is
  not augmented;
- sample weights and the student's regularization losses in the loss, which Keras' version
  leaves out.
"""

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.detection._anchors import anchors_of
from tfcompress.detection._loss import detection_distillation

_PACKED = "tfcompress_distiller_inputs"  # key of the inputs when teacher outputs ride along


class _ProjectedFeatureDistillation(keras.distillation.FeatureDistillation):
    """Mean squared error between teacher features and (projected) student features."""

    def __init__(self, teacher_layer_name: str, student_layer_name: str, projection: Any):
        super().__init__(loss=keras.losses.MeanSquaredError(),
                         teacher_layer_name=teacher_layer_name,
                         student_layer_name=student_layer_name)
        self._projection = projection

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        if self._projection is not None:
            student_outputs = self._projection(student_outputs)
        return super().compute_loss(teacher_outputs, student_outputs)


def _layer_output(model: keras.Model, name: str, role: str) -> Any:
    try:
        return model.get_layer(name).output
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers)
        raise ValueError(
            f"The {role} has no layer named {name!r}. Its layers: {names}."
        ) from None


def _single_output(model: keras.Model, role: str) -> None:
    outputs = getattr(model, "outputs", None)
    if outputs is not None and len(outputs) != 1:
        raise ValueError(
            f"The {role} {model.name!r} has {len(outputs)} outputs; the Distiller distills one "
            "classification output. Build a model that returns only the logits."
        )


def _trainable_flags(model: keras.Model) -> list:
    """The `trainable` flag of `model`, of its nested models' layers (top-down) and of every
    variable, to put back after Keras' Distiller has frozen the model in place."""
    layers, stack = [], [model]
    while stack:
        layer = stack.pop(0)
        layers.append((layer, layer.trainable))
        stack.extend(getattr(layer, "layers", None) or [])
    return [layers, [(v, v.trainable) for v in model.variables]]


def _restore_trainable_flags(flags: list) -> None:
    layers, variables = flags
    for layer, value in layers:  # parents first: each setter also sets its children
        layer.trainable = value
    for variable, value in variables:
        variable.trainable = value


@keras.saving.register_keras_serializable(package="tfcompress")
class Distiller(keras.distillation.Distiller):
    """Trains a small student to match a trained teacher as well as the labels.

    The loss is `alpha * hard + (1 - alpha) * (soft + feature_weight * features)`: `hard` is
    the compiled loss on the labels, `soft` the KL divergence between teacher and student
    outputs softened by `temperature` and scaled by `temperature**2` (Hinton et al., 2015), and
    `features` the mean squared error between a chosen teacher layer and a chosen student
    layer. The teacher is frozen. Use it like any Keras model: `compile`, `fit` (with any
    callbacks, e.g. `tfcompress.pruning.Pruning`, which then prunes the student only),
    `evaluate` and `predict` (both run the student). `distiller.student` is the trained student,
    a plain Keras model to save or export; the student may be a `quantize_aware` model.

    Args:
        teacher: A trained Keras model. The Distiller never trains it (its weights are left
            out of the distiller's trainable weights and it runs in inference mode), and the
            model passed in keeps its `trainable` flags.
        student: The Keras model to train; same input and output shapes as the teacher. Models
            ending in a softmax are handled: their log-probabilities serve as logits.
        temperature: Softmax temperature of the soft targets; higher is softer. Defaults to
            `4.0`.
        alpha: Weight of the hard-label loss, between 0 and 1. Defaults to `0.1`.
        feature_layers: `(teacher_layer_name, student_layer_name)` to also match an
            intermediate feature map. The spatial sizes must agree; when the channel counts
            differ, a learned linear projection (a 1x1 convolution) maps the student's channels
            to the teacher's. Needs functional or Sequential models. Defaults to `None`.
        feature_weight: Weight of the feature loss next to the soft-target loss. Defaults to
            `1.0`.
        precompute_teacher: Run the teacher once over `x` at the start of `fit` and reuse its
            outputs every epoch, instead of once per batch. Only correct when the data is not
            augmented; needs `x` as an array. Defaults to `False`.
        name: Name of the wrapper model. Defaults to `"distiller"`.

    Raises:
        TypeError: If teacher or student is not a Keras model.
        ValueError: For an out-of-range `temperature`/`alpha`/`feature_weight`, models with
            several outputs or mismatched shapes, or unknown or incompatible feature layers.

    Examples:
        >>> import keras, numpy as np
        >>> from tfcompress.distillation import Distiller
        >>> def mlp(width):
        ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width, "relu"),
        ...                              keras.layers.Dense(3)])
        >>> d = Distiller(teacher=mlp(32), student=mlp(4), temperature=2.0, alpha=0.5)
        >>> d.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...           metrics=["accuracy"])
        >>> history = d.fit(np.ones((8, 4)), np.zeros(8), epochs=1, verbose=0)
        >>> sorted(k for k in history.history if k.endswith("loss"))
        ['distillation_loss', 'loss', 'student_loss', 'total_loss']
        >>> d.predict(np.ones((2, 4)), verbose=0).shape
        (2, 3)
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        temperature: float = 4.0,
        alpha: float = 0.1,
        *,
        feature_layers: tuple[str, str] | None = None,
        feature_weight: float = 1.0,
        precompute_teacher: bool = False,
        name: str = "distiller",
        **kwargs: Any,
    ):
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise TypeError(f"{role} must be a keras.Model, got {type(model).__name__}.")
            _single_output(model, role)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or temperature <= 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"alpha (the weight of the hard-label loss) must be in [0, 1], got {alpha!r}."
            )
        if not isinstance(feature_weight, (int, float)) or feature_weight < 0:
            raise ValueError(f"feature_weight must be a number >= 0, got {feature_weight!r}.")
        projection = None
        if feature_layers is not None:
            if isinstance(feature_layers, str) or len(feature_layers) != 2:
                raise ValueError(
                    "feature_layers must be a pair (teacher_layer_name, student_layer_name), "
                    f"got {feature_layers!r}."
                )
            projection = self._make_projection(teacher, student, *feature_layers, name)
        losses: list[Any] = [keras.distillation.LogitsDistillation(
            temperature=float(temperature), loss=keras.losses.KLDivergence())]
        weights = [1.0]
        if feature_layers is not None:
            losses.append(_ProjectedFeatureDistillation(*feature_layers, projection))
            weights.append(float(feature_weight))
        flags = _trainable_flags(teacher)
        super().__init__(teacher=teacher, student=student, distillation_losses=losses,
                         distillation_loss_weights=weights, student_loss_weight=float(alpha),
                         name=name, **kwargs)
        _restore_trainable_flags(flags)  # Keras freezes the teacher in place; we leave it out
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.feature_layers = None if feature_layers is None else tuple(feature_layers)
        self.feature_weight = float(feature_weight)
        self.precompute_teacher = bool(precompute_teacher)
        self.feature_projection = projection  # tracked, so it trains with the student
        # imported here: `_training` imports Keras, which registers this module's class
        from tfcompress._training import outputs_logits

        self._teacher_probs = not outputs_logits(teacher)
        self._student_probs = not outputs_logits(student)
        # a detector: its class scores and boxes are distilled anchor by anchor
        self._anchors = anchors_of(teacher)
        if self._anchors is not None:
            s_anchors = anchors_of(student)
            if s_anchors is None or s_anchors.shape != self._anchors.shape or \
                    not np.allclose(s_anchors, self._anchors):
                raise ValueError(
                    f"The teacher {teacher.name!r} is a detector with {len(self._anchors)} "
                    f"anchors; the student {student.name!r} must carry the same anchors "
                    "(make it with tfcompress.distillation.make_student).")
        self._teacher_view = teacher
        self._student_view = None
        if feature_layers is not None:
            t_name, s_name = feature_layers
            self._teacher_view = keras.Model(
                teacher.inputs, [teacher.outputs[0], _layer_output(teacher, t_name, "teacher")],
                name=f"{teacher.name}_with_features")
            self._student_view = keras.Model(
                student.inputs, _layer_output(student, s_name, "student"),
                name=f"{student.name}_features")

    @staticmethod
    def _make_projection(teacher, student, t_name: str, s_name: str, name: str) -> Any:
        for role, model in (("teacher", teacher), ("student", student)):
            if getattr(model, "inputs", None) is None:
                raise ValueError(
                    f"feature_layers needs functional or Sequential models; the {role} "
                    f"{model.name!r} is subclassed. Distill outputs only (feature_layers=None)."
                )
        t_shape = tuple(_layer_output(teacher, t_name, "teacher").shape)
        s_shape = tuple(_layer_output(student, s_name, "student").shape)
        if len(t_shape) != len(s_shape) or t_shape[1:-1] != s_shape[1:-1]:
            raise ValueError(
                f"Feature layers {t_name!r} (teacher, shape {t_shape}) and {s_name!r} (student, "
                f"shape {s_shape}) must agree in every dimension but the channels. Pick layers "
                "at the same resolution."
            )
        if t_shape[-1] == s_shape[-1]:
            return None
        projection = keras.layers.Dense(t_shape[-1], use_bias=False,
                                        name=f"{name}_feature_projection")
        projection.build(s_shape)
        return projection

    # -- the teacher's weights are never trained -----------------------------------------------

    def _teacher_ids(self) -> set:
        return {id(v) for v in self.teacher.variables}

    def _without_teacher(self, variables: list) -> list:
        ids = self._teacher_ids()
        return [v for v in variables if id(v) not in ids]

    def _with_teacher(self, variables: list) -> list:
        ids = {id(v) for v in variables}
        return variables + [v for v in self.teacher.variables if id(v) not in ids]

    @property
    def trainable_weights(self) -> list:
        return self._without_teacher(super().trainable_weights)

    @property
    def trainable_variables(self) -> list:
        return self._without_teacher(super().trainable_variables)

    @property
    def non_trainable_weights(self) -> list:
        return self._with_teacher(super().non_trainable_weights)

    @property
    def non_trainable_variables(self) -> list:
        return self._with_teacher(super().non_trainable_variables)

    # -- training ----------------------------------------------------------------------------

    def compile(self, optimizer: Any = "adam", loss: Any = None, metrics: Any = None,
                **kwargs: Any) -> None:
        """Like `keras.Model.compile`; `loss` is the hard-label loss on the student's output.

        Defaults to sparse categorical cross-entropy matching the student's output (logits or
        probabilities). A cross-entropy whose `from_logits` disagrees with the student's output
        is refused, because it would train silently on the wrong quantity.
        """
        if loss is None and self._anchors is not None:
            from tfcompress.detection import DetectionLoss, matching_of

            loss = DetectionLoss(self._anchors, matching=matching_of(self.student))
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not self._student_probs)
        from_logits = getattr(loss, "from_logits", None)
        if isinstance(loss, str) and "crossentropy" in loss:
            from_logits = False
        if from_logits is not None and from_logits == self._student_probs:
            ends = "a softmax (probabilities)" if self._student_probs else "logits (no softmax)"
            raise ValueError(
                f"The student {self.student.name!r} outputs {ends}, but the loss has "
                f"from_logits={from_logits}. Use keras.losses.SparseCategoricalCrossentropy("
                f"from_logits={not self._student_probs}) (or leave loss=None)."
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """`keras.Model.fit`; with `precompute_teacher`, the teacher runs once over `x` first."""
        if self.precompute_teacher and self.alpha < 1.0:
            x = self._with_teacher_outputs(x, kwargs.get("batch_size") or 32)
        return super().fit(x, y, **kwargs)

    def _with_teacher_outputs(self, x: Any, batch_size: int) -> dict:
        if isinstance(x, dict) or not hasattr(x, "shape") or not hasattr(x, "__len__"):
            raise ValueError(
                "precompute_teacher=True needs the training inputs as one array (x=...), got "
                f"{type(x).__name__}. A dataset or generator may be shuffled or augmented, so "
                "its teacher outputs cannot be computed once: pass an array, or set "
                "precompute_teacher=False."
            )
        outs = self._teacher_view.predict(x, batch_size=max(256, batch_size), verbose=0)
        packed = {_PACKED: x}
        if self.feature_layers is None:
            packed["teacher_outputs"] = outs
        else:
            packed["teacher_outputs"], packed["teacher_features"] = outs
        return packed

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        images, _ = self._unpack(inputs)
        return self.student(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images, cached = self._unpack(x)
        if y_pred is None:
            y_pred = self(images, training=training)
        hard = ops.convert_to_tensor(0.0)
        if self.alpha > 0.0 and y is not None:
            hard = self._hard_loss(y, y_pred, sample_weight)
        soft = ops.convert_to_tensor(0.0)
        if self.alpha < 1.0:
            if cached is not None:
                t_out, t_feat = cached
            elif self.feature_layers is not None:
                t_out, t_feat = self._teacher_view(images, training=False)
            else:
                t_out, t_feat = self.teacher(images, training=False), None
            if self._anchors is not None:
                soft = detection_distillation(t_out, y_pred)
            else:
                soft = self.distillation_losses[0].compute_loss(
                    self._logits(t_out, self._teacher_probs),
                    self._logits(y_pred, self._student_probs))
            if self.feature_layers is not None:
                s_feat = self._student_view(images, training=training)
                soft = soft + self.feature_weight * self.distillation_losses[1].compute_loss(
                    ops.stop_gradient(t_feat), s_feat)
        total = self.alpha * hard + (1.0 - self.alpha) * soft
        regularization = self.student.losses
        if regularization:
            total = total + ops.sum(ops.stack(regularization))
        self.student_loss_tracker.update_state(hard)
        self.distillation_loss_tracker.update_state(soft)
        self.total_loss_tracker.update_state(total)
        return total

    def _hard_loss(self, y: Any, y_pred: Any, sample_weight: Any) -> Any:
        loss_fn = self._student_loss
        if isinstance(loss_fn, keras.losses.Loss):
            return loss_fn(y, y_pred, sample_weight=sample_weight)
        per_sample = loss_fn(y, y_pred)
        if sample_weight is not None:
            w = ops.cast(ops.reshape(sample_weight, ops.shape(per_sample)), per_sample.dtype)
            return ops.sum(per_sample * w) / ops.maximum(ops.sum(w), 1e-12)
        return ops.mean(per_sample)

    @staticmethod
    def _logits(outputs: Any, are_probabilities: bool) -> Any:
        if not are_probabilities:
            return outputs
        return ops.log(ops.clip(outputs, 1e-7, 1.0))

    @staticmethod
    def _unpack(x: Any) -> tuple[Any, Any]:
        if isinstance(x, dict) and _PACKED in x:
            return x[_PACKED], (x["teacher_outputs"], x.get("teacher_features"))
        return x, None

    # -- serialization -----------------------------------------------------------------------

    def get_compile_config(self) -> dict | None:
        config = super().get_compile_config()
        if config is not None and hasattr(self, "_student_loss_for_serialization"):
            config["loss"] = keras.saving.serialize_keras_object(
                self._student_loss_for_serialization)
        return config

    def compile_from_config(self, config: dict) -> None:
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.student.built:  # so the saved optimizer state can be loaded into it
            self.optimizer.build(self.trainable_variables)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "feature_layers": None if self.feature_layers is None else list(self.feature_layers),
            "feature_weight": self.feature_weight,
            "precompute_teacher": self.precompute_teacher,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Distiller":
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        if config.get("feature_layers") is not None:
            config["feature_layers"] = tuple(config["feature_layers"])
        return cls(**config)

