"""Shared fixtures: two logical CPU devices (for MirroredStrategy) and a trained reference CNN."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPUs must be configured before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import tfcompress as tfc  # noqa: E402


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Two strategies in one process can collide on collective-op keys, so tests share this one.
    """
    from tfcompress import _distribute

    strategy = _distribute.strategy("mirrored")  # the one the CLI's --distribute uses too
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.fixture(scope="session")
def mnist():
    return tfc.data.load("mnist")


@pytest.fixture(scope="session")
def trained_cnn(mnist):
    """The reference CNN trained for 2 epochs on mnist (about 95 % test accuracy)."""
    keras.utils.set_random_seed(0)
    model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
    model.fit(mnist.x_train, mnist.y_train, epochs=2, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def trained_cnn_path(trained_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "cnn.keras"
    trained_cnn.save(path)
    return path


def litert_predict(path, x):
    """An independent LiteRT loop: one image at a time, float in, dequantized float out."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for i in range(len(x)):
        sample = x[i : i + 1]
        if inp["dtype"] != np.float32:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / scale + zp), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], sample)
        interp.invoke()
        y = interp.get_tensor(out["index"])[0].astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zp = out["quantization"]
            y = (y - zp) * scale
        results.append(y)
    return np.stack(results)
