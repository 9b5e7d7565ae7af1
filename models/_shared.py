"""What the measurement scripts in `models/` share: writing a result as JSON and markdown,
running tfcompress and tfmot side by side (tfmot in its own process, where `tf_keras` runs),
and the MobileNetV2 that several scripts train on `shapes` per seed.

A script in a sub-folder imports it after `sys.path.insert(0, <models folder>)`.
"""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_results(folder: Path, name: str, result: dict,
                  markdown: Callable[[dict], str]) -> None:
    """Writes `name.json` and `name.md` in `folder` and prints the markdown."""
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


def tfmot_side(script: str, args: list[str]) -> dict:
    """The tfmot half of a comparison: `script --engine tfmot ARGS` in its own process (with
    `TF_USE_LEGACY_KERAS=1`), whose last line of output is its result as JSON."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    proc = subprocess.run([sys.executable, script, "--engine", "tfmot", *args], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_engines(script: str, args: list[str], engine: str, cfg: dict, out: str,
                    run_ours: Callable[[], dict], run_tfmot: Callable[[], dict],
                    markdown: Callable[[dict, dict, dict], str]) -> None:
    """The `main` of a tfcompress-vs-tfmot script: one engine alone (`--engine ours|tfmot`,
    printed as JSON), or both side by side, written to `out`.json/.md."""
    if engine == "tfmot":
        print(json.dumps(run_tfmot()))
        return
    if engine == "ours":
        print(json.dumps(run_ours(), indent=2))
        return
    ref = tfmot_side(script, args)
    ours = run_ours()
    Path(out + ".json").write_text(
        json.dumps({"settings": cfg, "tfcompress": ours, "tfmot": ref}, indent=2) + "\n")
    Path(out + ".md").write_text(markdown(cfg, ours, ref))
    print(markdown(cfg, ours, ref))


# Every baseline a script compares against is trained until its validation accuracy stops
# improving (as make_card.py does): a fixed, short training leaves it undertrained, and the
# fine-tuning of a compressed copy then "gains" points by finishing that training.
# No stop before epoch FIRST_CHECK: BatchNorm's moving statistics lag the first epochs' weights.
MAX_EPOCHS, PATIENCE, FIRST_CHECK = 80, 6, 5


def fit_converged(model, train: tuple, val: tuple, callbacks_module, *, batch_size: int = 64,
                  callbacks: tuple = (), max_epochs: int = MAX_EPOCHS,
                  monitor: str = "val_accuracy") -> int:
    """Fits `model` on `train` (x, y) until its `monitor` on `val` (x, y) has not improved for
    PATIENCE epochs (accuracy up; a loss, e.g. a detector's `"val_loss"`, down), keeps its
    best weights and returns the epochs run. `callbacks_module` is `keras.callbacks` or, in a
    tfmot process, `tf_keras.callbacks`."""
    stop = callbacks_module.EarlyStopping(monitor=monitor,
                                          mode="min" if "loss" in monitor else "max",
                                          patience=PATIENCE, restore_best_weights=True,
                                          start_from_epoch=FIRST_CHECK)
    history = model.fit(train[0], train[1], validation_data=val, epochs=max_epochs,
                        batch_size=batch_size, verbose=0, callbacks=[stop, *callbacks])
    return len(history.history["loss"])


def trained_mobilenet_v2(seed: int) -> tuple[Any, Any, Any, Any, int]:
    """`(full, train, val, model, epochs)`: `shapes` at 96 x 96 (2,000 images), its training
    part with validation images held out, and MobileNetV2 (alpha 0.35) trained on it until
    its validation accuracy stops improving (`fit_converged`), in `epochs` epochs."""
    import keras

    import tfcompress as tfc

    full = tfc.data.load("shapes", seed=seed, image_size=96, num_samples=2000)
    train, val = full.hold_out(seed=seed)
    keras.utils.set_random_seed(seed)
    model = tfc.reference.compile_for_classification(
        tfc.reference.reference_mobilenet_v2(full.input_shape, full.num_classes), 3e-3)
    epochs = fit_converged(model, (train.x_train, train.y_train), val, keras.callbacks,
                           batch_size=32)
    return full, train, val, model, epochs


def detection_data(seed: int, num_samples: int = 3000) -> tuple[Any, tuple]:
    """`(train, val)`: the detection card's `shapes-detect` at 96 x 96 (`num_samples` images)
    with its validation images held out of the training part."""
    import tfcompress as tfc

    return tfc.data.load("shapes-detect", seed=seed, image_size=96,
                         num_samples=num_samples).hold_out(seed=seed)
