"""The `Pruning` callback: advances the schedule and applies the mask math to the model."""

import contextlib
import importlib.util
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress import _graph, _options
from tfcompress.pruning import _channels, _masks
from tfcompress.pruning._selection import Target, prunable_targets, selection
from tfcompress.pruning.schedules import PruningSchedule

SCOPES = _options.SCOPES


class _MaskConstraint(keras.constraints.Constraint):
    """Multiplies a weight by its mask after every optimizer step, inside the compiled step.

    Keras' optimizers apply `variable.constraint` right after the gradient update, so pruned
    weights stay exactly zero at no per-batch Python cost. A constraint the layer already had is
    applied first.
    """

    def __init__(self, mask: keras.Variable, inner: Any = None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * ops.cast(self.mask, w.dtype)


def _pruned_model(model: keras.Model) -> keras.Model:
    """The model whose weights are pruned: a distiller's student, not its frozen teacher."""
    if isinstance(model, keras.distillation.Distiller):
        return model.student
    return model


class Pruning(keras.callbacks.Callback):
    """Magnitude pruning on a schedule, as one callback in an ordinary `model.fit`.

    At every update step of the schedule the callback recomputes each selected weight's mask
    (removing the smallest magnitudes) and zeroes the pruned weights; between updates the mask
    is applied inside the compiled train step, so pruned weights stay exactly zero. The step is
    read from `model.optimizer.iterations`, so a fit resumed from a checkpoint continues the
    schedule, and one instance can be used for several `fit` calls. When training ends the
    model is a plain Keras model again: nothing to strip before saving or export. On a
    `tfcompress.distillation.Distiller` it prunes the student, never the frozen teacher.

    Args:
        schedule: A `PruningSchedule` (e.g. `PolynomialDecay`, `ConstantSparsity`).
        granularity: `"unstructured"`; `"N:M"` such as `"2:4"`: at most N non-zeros in every
            group of M consecutive weights along the input-channel axis (depthwise kernels have
            no such axis and are left dense under N:M); or `"channel"`: whole output channels
            of Conv/Dense layers, with everything coupled to them (BatchNormalization,
            depthwise convs, residual and squeeze-excite partners), so that
            `tfcompress.pruning.shrink` can remove them afterwards. The sparsity is then the
            fraction of channels removed. Defaults to `"unstructured"`.
        scope: `"layer"` (each weight, or each channel group, reaches the target) or
            `"global"` (one threshold across all of them; for channels, on scores divided by
            their group's mean). Defaults to `"layer"`.
        layers: Prune only layers matching any of these: classes, `fnmatch` name patterns, or
            predicates `layer -> bool`; exactly those are pruned. Defaults to `None`: every
            supported layer except the two kinds below.
        exclude: Leave out layers matching any of these. Defaults to `None`.
        prune_depthwise: With `layers=None`, prune depthwise kernels too (DepthwiseConv and
            the depthwise half of SeparableConv). A depthwise kernel has 9 weights per channel
            and nothing to spare: on the reference CNN, `python
            models/mnist_cnn/compare_pruning.py` measures that pruning it costs more accuracy
            than it saves bytes. Defaults to `False`, as tfmot does.
        min_weights: With `layers=None`, leave weights with fewer values than this dense (a
            network's first convolution, a small classifier head): they are a tiny share of
            the model and the most sensitive part of it (same measurement). A model whose
            weights are all that small is pruned whole. Applies to the unstructured and N:M
            granularities. Defaults to `1024`.
        layer_sparsity: Final sparsity per layer name (for `"channel"`, per channel group:
            its producers' names joined by `+`), e.g. from
            `tfcompress.debug.sensitivity(model, data).sparsities(0.8)`: exactly these layers
            are pruned, each reaching its own value when the schedule reaches its final
            sparsity (the schedule's value is scaled for each). Not with `scope="global"` or
            N:M. Defaults to `None` (one sparsity for all).
        verbose: `1` prints one line per epoch with the target and achieved sparsity.
            Defaults to `0`.
        log_dir: If set, per-layer sparsity is written there as TensorBoard scalars each
            epoch. Defaults to `None`.
        criterion: How channels are ranked under `granularity="channel"`: `"l1"` or `"l2"`
            (norm of each output filter, summed over coupled layers), `"bn_scale"` (|gamma|
            of the BatchNormalization that follows), or a function `(graph, group) -> scores`.
            Defaults to `"l1"`.
        round_to: Under `granularity="channel"`, round each group's kept channel count to a
            multiple of this. LiteRT's int8 kernels are much faster on multiples of 8: for
            MobileNetV2 at 40 % of channels, `python models/compare_channels.py --model
            mobilenetv2` measured 1.43x to 1.75x lower int8 latency than the dense model
            with `round_to=8` (the processor decides), and 1.30x with `--round-to 1`.
            Defaults to `1`.

    Raises:
        TypeError: If `schedule` is not a `PruningSchedule`.
        ValueError: For an unknown granularity or scope, or an N:M pattern the schedule cannot
            reach; at the start of `fit`, if nothing prunable is selected.

    Examples:
        >>> import numpy as np, keras
        >>> from tfcompress.pruning import ConstantSparsity, Pruning
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
        ...                           keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> cb = Pruning(ConstantSparsity(0.5, frequency=1))
        >>> _ = model.fit(np.ones((32, 8)), np.ones((32, 2)), epochs=1, verbose=0, callbacks=[cb])
        >>> float(np.mean(keras.ops.convert_to_numpy(model.layers[0].kernel) == 0))
        0.5
    """

    def __init__(
        self,
        schedule: PruningSchedule,
        granularity: str = "unstructured",
        scope: str = "layer",
        layers: Any = None,
        exclude: Any = None,
        verbose: int = 0,
        log_dir: str | None = None,
        criterion: Any = "l1",
        round_to: int = 1,
        prune_depthwise: bool = False,
        min_weights: int = 1024,
        layer_sparsity: "dict[str, float] | None" = None,
    ):
        super().__init__()
        if not isinstance(schedule, PruningSchedule):
            raise TypeError(
                "schedule must be a tfcompress.pruning.PruningSchedule (e.g. "
                f"PolynomialDecay(...)), got {type(schedule).__name__}."
            )
        if scope not in SCOPES:
            raise ValueError(f"Unknown scope {scope!r}; expected one of {SCOPES}.")
        self.schedule = schedule
        self.granularity = _masks.parse_granularity(granularity)
        if self.granularity.kind == "n:m":
            if scope == "global":
                raise ValueError(
                    f"granularity {granularity!r} fixes the sparsity inside every group, so "
                    "scope='global' has no meaning for it; use scope='layer'."
                )
            target = self.granularity.pattern_sparsity
            final = schedule.final_sparsity_value
            if final is not None and not math.isclose(final, target, abs_tol=1e-6):
                raise ValueError(
                    f"granularity {granularity!r} means a sparsity of exactly {target:g}, but "
                    f"the schedule ends at {final:g}. Set the schedule's final sparsity to "
                    f"{target:g}."
                )
        self.scope = scope
        self.criterion = _channels.get_criterion(criterion)
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise ValueError(f"round_to must be an integer >= 1, got {round_to!r}.")
        self.round_to = round_to
        if layer_sparsity is not None:
            if scope == "global" or self.granularity.kind == "n:m":
                raise ValueError("layer_sparsity sets each layer's sparsity, so it goes with "
                                 "scope='layer' and the unstructured or channel granularity.")
            if schedule.final_sparsity_value in (None, 0):
                raise ValueError("layer_sparsity scales the schedule's final sparsity, so the "
                                 "schedule needs a final sparsity above 0.")
            bad = {k: v for k, v in dict(layer_sparsity).items()
                   if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0}
            if bad or not layer_sparsity:
                raise ValueError("layer_sparsity must map layer names to sparsities in "
                                 f"[0, 1), got {bad or layer_sparsity!r}.")
            layer_sparsity = {str(k): float(v) for k, v in layer_sparsity.items()}
            if layers is None:  # exactly the named layers (a channel group's key joins its
                # producers' names with "+")
                names = {n for key in layer_sparsity for n in key.split("+")}
                layers = [lambda layer, names=names: layer.name in names]
        self.layer_sparsity = layer_sparsity
        self.layers = layers
        self.exclude = exclude
        if isinstance(min_weights, bool) or not isinstance(min_weights, int) or min_weights < 0:
            raise ValueError(f"min_weights must be an integer >= 0, got {min_weights!r}.")
        self.prune_depthwise = bool(prune_depthwise)
        self.min_weights = min_weights
        self.verbose = verbose
        self.log_dir = log_dir
        self._targets: list[Target] = []
        self._channel_graph: _channels.ChannelGraph | None = None
        self._channel_refs: list[tuple[Any, int | None, Any]] = []
        self._masks: list[keras.Variable] = []
        self._inner_constraints: list[Any] = []
        self._last_step = -1
        self._epoch_start = 0
        self._pending_init = False
        self._installed = False
        self._writer = None
        if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "log_dir writes TensorBoard summaries, which needs the tensorboard package: "
                "pip install tensorboard (or pip install 'tfcompress[tensorboard]')."
            )

    # -- keras hooks -------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._installed = False
        self._last_step = self._step() - 1
        self._epoch_start = self._last_step + 1
        if self.model.built:
            self._install()
        # else: a subclassed model is built by its first batch; install after it.

    def on_train_batch_begin(self, batch, logs=None):
        if self._pending_init:
            self._restore_masks()

    def on_epoch_begin(self, epoch, logs=None):
        # One read of the optimizer's step per epoch; within it, steps are counted from the
        # batch index, so no batch waits for the device just to learn its step number.
        self._epoch_start = self._step()

    def on_train_batch_end(self, batch, logs=None):
        if not self._installed:
            self._install()
            self._restore_masks()
        step = self._epoch_start + batch + 1
        if step == self._last_step:
            return
        due = any(self.schedule.should_update(s) for s in range(self._last_step + 1, step + 1))
        self._last_step = step
        if due:
            self._update_masks(self.schedule.sparsity(step))

    def on_epoch_end(self, epoch, logs=None):
        if not (self.verbose or self.log_dir):
            return
        per_weight = self._achieved()
        total = sum(z for z, _ in per_weight.values()) / max(
            1, sum(n for _, n in per_weight.values())
        )
        step = self._step()
        if self.verbose:
            print(
                f"Pruning: epoch {epoch + 1}, step {step}, target "
                f"{self.schedule.sparsity(step):.3f}, achieved {total:.3f} over "
                f"{len(per_weight)} weights ({self.granularity})"
            )
        if self.log_dir:
            self._write_summaries(per_weight, total, step)

    def on_train_end(self, logs=None):
        if not self._installed:
            return
        self._sync_state()
        self._installed = False
        for target, mask, inner in zip(self._targets, self._masks, self._inner_constraints,
                                       strict=True):
            target.variable.assign(target.variable * ops.cast(mask, target.variable.dtype))
            target.variable.constraint = inner
        # Later fits must not keep multiplying by the masks.
        self.model.train_function = None
        self._masks = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- internals ---------------------------------------------------------------------------

    def _install(self) -> None:
        """Finds the weights, creates their masks and hooks them into the optimizer step."""
        if self.granularity.kind == "channel":
            self._targets = self._channel_targets(_pruned_model(self.model))
        else:
            self._targets = prunable_targets(
                _pruned_model(self.model), self.layers, self.exclude,
                need_n_m_axis=self.granularity.kind == "n:m",
                prune_depthwise=self.prune_depthwise, min_weights=self.min_weights,
            )
        if self.layer_sparsity is not None:
            found = ({g.name for g in self._channel_graph.groups}
                     if self.granularity.kind == "channel"
                     else {t.layer.name for t in self._targets})
            unknown = sorted(set(self.layer_sparsity) - found)
            if unknown:
                raise ValueError(
                    f"layer_sparsity names {unknown}, which the model has no prunable "
                    f"{'channel group' if self.granularity.kind == 'channel' else 'layer'} "
                    f"of; it has {sorted(found)}. Scan this model again.")
        strategy = getattr(self.model, "distribute_strategy", None)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self._masks = [
                keras.Variable(np.ones(t.variable.shape, dtype="float32"), trainable=False,
                               dtype="float32", name=f"prune_mask_{i}")
                for i, t in enumerate(self._targets)
            ]
        self._inner_constraints = [t.variable.constraint for t in self._targets]
        for target, mask, inner in zip(self._targets, self._masks, self._inner_constraints,
                                       strict=True):
            target.variable.constraint = _MaskConstraint(mask, inner)
        # A train function traced before the constraints existed would not apply them.
        self.model.make_train_function(force=True)
        self._installed = True
        # Masks are first computed at the first batch, after every on_train_begin has run (a
        # BackupAndRestore callback restores the weights there).
        self._pending_init = True

    def _restore_masks(self) -> None:
        """Resumed mid-schedule: recompute the masks the current step calls for."""
        self._pending_init = False
        sparsity = self.schedule.sparsity(self._step())
        if sparsity > 0:
            self._update_masks(sparsity)

    def _step(self) -> int:
        self._sync_state()
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _sync_state(self) -> None:
        """Brings the training state back into the model's variables before they are read or
        written. On JAX, Keras keeps it outside them between batches (`jax_state_sync` is its
        public hook for callbacks); elsewhere this does nothing."""
        sync = getattr(self.model, "jax_state_sync", None)
        if callable(sync):
            sync()

    def _masks_changed(self) -> None:
        """Makes the compiled train step use the new masks. TensorFlow reads the mask
        variables at every step; JAX compiles the step with their values, so it is traced
        again (once per mask update, every `frequency` steps)."""
        if keras.backend.backend() == "jax":
            self.model.make_train_function(force=True)

    def _channel_targets(self, model: keras.Model) -> list[Target]:
        include, leave_out = selection(model, self.layers, self.exclude)

        def selected(layer: Any) -> bool:
            return (not include or _graph.matches(layer, include)) and not (
                leave_out and _graph.matches(layer, leave_out))

        graph = _channels.ChannelGraph(model, selected)
        groups = [g for g in graph.groups if g.prunable]
        if not groups:
            whole = "; ".join(f"{g.name}: {', '.join(g.reasons)}" for g in graph.groups
                              if g.producers) or "no Conv/Dense layer"
            raise ValueError(
                f"No channel of model {model.name!r} can be pruned: {whole}. Channel pruning "
                "needs Conv/Dense layers whose outputs do not reach the model output directly."
            )
        self._channel_graph = graph
        self._channel_refs = graph.channel_weights()
        return [Target(ref.layer, ref.attribute, ref.variable, None)
                for ref, _, _ in self._channel_refs]

    def _channel_masks(self, sparsity: float) -> list[np.ndarray]:
        graph = self._channel_graph
        groups = [g for g in graph.groups if g.prunable]
        scores = [np.asarray(self.criterion(graph, g), dtype=np.float64) for g in groups]
        if self.scope == "global":
            keeps = _channels.global_channel_keep(scores, sparsity, self.round_to)
        else:
            keeps = [_channels.channel_keep(s, self._scaled(g.name, sparsity), self.round_to)
                     for s, g in zip(scores, groups, strict=True)]
        keep = {g.id: k for g, k in zip(groups, keeps, strict=True)}
        return [graph.weight_mask(*entry, keep) for entry in self._channel_refs]

    def _scaled(self, name: str, sparsity: float) -> float:
        """`sparsity` for layer (or channel group) `name` under `layer_sparsity`."""
        if self.layer_sparsity is None:
            return sparsity
        final = self.schedule.final_sparsity_value
        return min(0.999, sparsity * self.layer_sparsity.get(name, final) / final)

    def _update_masks(self, sparsity: float) -> None:
        self._sync_state()
        self._apply_masks(sparsity)
        self._masks_changed()

    def _apply_masks(self, sparsity: float) -> None:
        if self.granularity.kind == "unstructured":
            # On the weights' device: no copy to the host, no sort in NumPy.
            weights = [t.variable.value for t in self._targets]
            if self.layer_sparsity is None:
                masks = _masks.magnitude_masks_on_device(weights, sparsity, self.scope)
            else:
                masks = [_masks.magnitude_masks_on_device(
                    [w], self._scaled(t.layer.name, sparsity))[0]
                    for w, t in zip(weights, self._targets, strict=True)]
            for target, mask_var, mask in zip(self._targets, self._masks, masks, strict=True):
                mask_var.assign(mask)
                target.variable.assign(target.variable * ops.cast(mask, target.variable.dtype))
            return
        weights = [ops.convert_to_numpy(t.variable) for t in self._targets]
        if self.granularity.kind == "channel":
            masks = self._channel_masks(sparsity)
        elif self.granularity.kind == "n:m":
            zeros = _masks.n_m_zeros(sparsity, self.granularity.n, self.granularity.m)
            masks = [
                _masks.n_m_mask(w, self.granularity.n, self.granularity.m, t.n_m_axis, zeros)
                for w, t in zip(weights, self._targets, strict=True)
            ]
        else:
            raise AssertionError(self.granularity)
        for target, mask_var, w, mask in zip(self._targets, self._masks, weights, masks,
                                             strict=True):
            mask_var.assign(mask.astype("float32"))
            target.variable.assign((w * mask).astype(w.dtype))

    def _achieved(self) -> dict[str, tuple[int, int]]:
        self._sync_state()
        out = {}
        for t in self._targets:
            w = ops.convert_to_numpy(t.variable)
            out[t.name] = (int(np.count_nonzero(w == 0)), int(w.size))
        return out

    def _write_summaries(self, per_weight: dict, total: float, step: int) -> None:
        import tensorflow as tf  # TensorBoard files are written with TensorFlow's summary API

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            tf.summary.scalar("pruning/target_sparsity", self.schedule.sparsity(step))
            tf.summary.scalar("pruning/sparsity", total)
            for name, (zeros, size) in per_weight.items():
                tf.summary.scalar(f"pruning/{name}", zeros / size)
        self._writer.flush()
