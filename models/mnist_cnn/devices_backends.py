"""The same compression on one device and on two, and pruning + QAT trained under JAX.

    python models/mnist_cnn/devices_backends.py

1. The reference CNN (2 epochs on mnist) goes through channel pruning (50 %, 2 epochs), QAT
   (1 epoch) and int8 export with `compress(..., distribute=None)` and with
   `distribute="mirrored"` over two logical CPU devices, same seed; int8 accuracy in LiteRT.
2. In a `KERAS_BACKEND=jax` subprocess the CNN is pruned to 50 % (1 epoch) and fine-tuned with
   QAT (1 epoch) and saved; this (TensorFlow) process exports it to int8 and measures the
   file's top-1 agreement with the Keras model on 200 test images.

Writes `devices_backends.json` and `.md` beside this script.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import tfcompress as tfc  # noqa: E402

HERE = Path(__file__).parent
RECIPE = {"name": "devices", "steps": [
    {"prune": {"granularity": "channel", "sparsity": 0.5, "round_to": 8, "epochs": 2}},
    {"qat": {"epochs": 1}}, {"export": {"mode": "int8"}}]}
JAX_RUN = """
    import json, keras, numpy as np, tfcompress as tfc, tfcompress.pruning as P
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
    print(json.dumps({"backend": keras.backend.backend(), "sparsity":
                      P.sparsity_report(model).sparsity, "qat_accuracy": float(np.mean(
                          q.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))}))
"""


def main() -> None:
    keras.utils.set_random_seed(0)
    mnist = tfc.data.load("mnist")
    model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
    model.fit(mnist.x_train, mnist.y_train, epochs=2, batch_size=64, verbose=0)
    results: dict = {"devices": {}}
    for name, dist in (("1 device", None), ("2 devices (mirrored)", "mirrored")):
        run = tfc.compress(model, mnist, RECIPE, tempfile.mkdtemp() + "/out", runs=3,
                           progress=False, distribute=dist)
        results["devices"][name] = {"baseline": run.baseline.accuracy,
                                    "final_int8": run.final.accuracy}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(JAX_RUN)], cwd=tmp,
                              env=env, capture_output=True, text=True, check=True)
        jax = json.loads(done.stdout.strip().splitlines()[-1])
        q = keras.saving.load_model(os.path.join(tmp, "qat_jax.keras"))
        report = tfc.export.to_tflite(q, os.path.join(tmp, "q.tflite"), "int8",
                                      verify_data=mnist.x_test)
        jax.update(integer_only=report.integer_only, agreement=report.agreement,
                   agreement_samples=report.agreement_samples)
    results["jax"] = jax
    (HERE / "devices_backends.json").write_text(json.dumps(results, indent=1) + "\n")
    d = results["devices"]
    lines = ["# One device against two, and training under JAX", "",
             "Written by `python models/mnist_cnn/devices_backends.py` (see its docstring).",
             "", "| run | baseline | final int8 (LiteRT, test split) |", "|---|---|---|"]
    lines += [f"| {k} | {100 * v['baseline']:.2f} % | {100 * v['final_int8']:.2f} % |"
              for k, v in d.items()]
    lines += ["", f"Under JAX: sparsity {jax['sparsity']:.3f}, QAT accuracy "
              f"{100 * jax['qat_accuracy']:.2f} %; exported from TensorFlow: integer-only "
              f"{jax['integer_only']}, agreement {100 * jax['agreement']:.2f} % of "
              f"{jax['agreement_samples']} images.", ""]
    (HERE / "devices_backends.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
