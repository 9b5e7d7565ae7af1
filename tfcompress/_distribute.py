"""Training on more than one device with `tf.distribute`, for the pipeline and the CLI.

`"mirrored"` is `tf.distribute.MirroredStrategy` over every local GPU or, without one, every
logical CPU device; one is made per process and reused (two mirrored strategies in one
process can collide on their collective-op keys). A `tf.distribute.Strategy` object, e.g.
`MultiWorkerMirroredStrategy` configured by `TF_CONFIG`, is used as it is.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

STRATEGIES: tuple[str, ...] = ("mirrored",)
_made: dict[str, Any] = {}


def strategy(spec: Any) -> Any:
    """The `tf.distribute.Strategy` for `spec` (`None`, `"mirrored"` or a strategy)."""
    if spec is None:
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"distribute={spec!r} uses tf.distribute, which needs the TensorFlow backend "
            f"(KERAS_BACKEND is {keras.backend.backend()!r}); on JAX, use keras.distribution.")
    import tensorflow as tf

    if isinstance(spec, tf.distribute.Strategy):
        return spec
    if spec not in STRATEGIES:
        raise ValueError(f"distribute must be one of {STRATEGIES} or a tf.distribute.Strategy, "
                         f"got {spec!r}.")
    if spec not in _made:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        _made[spec] = tf.distribute.MirroredStrategy(devices)
    return _made[spec]


@contextlib.contextmanager
def scope(spec: Any) -> Iterator[Any]:
    """Runs the block in the strategy's scope (models made there are distributed); yields the
    strategy, or `None` for `spec=None`."""
    chosen = strategy(spec)
    if chosen is None:
        yield None
        return
    with chosen.scope():
        yield chosen


def replicas(spec: Any) -> int:
    """How many devices a run with `spec` trains on."""
    chosen = strategy(spec)
    return 1 if chosen is None else int(chosen.num_replicas_in_sync)
