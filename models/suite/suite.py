"""The user-like suite: models and data nobody tuned the recipes on, each compressed with a
recipe under the default budget (1 point of top-1), and the verdicts, ratios and times in one
table.

Every task is made here, offline and seeded: its images (procedural: the `shapes` outlines,
gratings, grey or colour, 32 to 128 pixels, 2 to 20 classes, 300 to 5,000 training images),
a model as its owner might have built it (with and without `Rescaling` or `Normalization`,
softmax or logits, a `keras.applications` backbone) and the owner's training (with or without
augmentation). The images are saved as uint8 `.npz` files (train, validation, test) and the
model as `.keras`, then `tfcompress.compress(model, train, recipe, val=val, test=test)` runs.

    python models/suite/suite.py                       # every task, recipe auto
    python models/suite/suite.py --recipe default      # the same tasks, another recipe
    python models/suite/suite.py --no-restore-best     # auto, fine-tuning to the last epoch
    python models/suite/suite.py --cosine-lr           # auto, learning rate along a cosine
    python models/suite/suite.py --teacher             # auto, the input model as teacher
    python models/suite/suite.py --tasks photo3_96 --work /tmp/suite

The rows of the `default` recipe before budget-first compression come from commit a7c113e:
`git worktree add /tmp/old a7c113e`, then this script run from there with
`PYTHONPATH=/tmp/old python models/suite/suite.py --recipe default --label "default (a7c113e)"`
(copy this file into the worktree first; it writes its rows beside itself).

Trained models and data are kept in --work (default: a `tfcompress-suite` folder in the
system's temporary folder) and reused; results are merged into `results.json` and
`results.md` beside this script, one row per task and recipe, with the commit they ran on.
"""

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- data

def _shapes(classes: list[int], n: int, size: int, grey: bool, seed: int):
    """`n` images of the chosen `shapes` classes (labels renumbered 0..k-1), uint8."""
    from tfcompress.data import make_shapes

    k = len(classes)
    x, y = make_shapes(num_samples=int(np.ceil(n * 6 / k)) + 6, image_size=size, seed=seed)
    keep = np.isin(y, classes)
    x, y = x[keep][:n], y[keep][:n]
    y = np.searchsorted(np.array(sorted(classes)), y).astype(np.int32)
    if grey:
        x = x.mean(axis=-1, keepdims=True)
    return (x * 255).round().astype(np.uint8), y


def _gratings(n: int, size: int, angles: int, freqs: int, seed: int):
    """Sinusoidal gratings: class = (orientation, spatial frequency), with random phase,
    contrast, brightness, noise and a random occluding blob; grey uint8."""
    rng = np.random.default_rng(seed)
    classes = angles * freqs
    y = (np.arange(n) % classes).astype(np.int32)
    rng.shuffle(y)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    x = np.empty((n, size, size, 1), np.float32)
    for i, label in enumerate(y):
        a = np.pi * (label // freqs) / angles + rng.normal(0, 0.05)
        f = (2.0 + 2.5 * (label % freqs)) * rng.uniform(0.93, 1.07)
        wave = np.sin(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
        img = 0.5 + rng.uniform(-0.15, 0.15) + rng.uniform(0.15, 0.45) * wave
        img += rng.normal(0, 0.08, img.shape)
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.08, 0.2)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1)
        x[i, ..., 0] = np.clip(img, 0, 1)
    return (x * 255).round().astype(np.uint8), y


# ----------------------------------------------------------------------------- models

def _small_cnn(shape, classes, widths, *, logits=False, rescale=False, bn=False, dense=0):
    import keras
    from keras import layers

    inputs = keras.Input(shape)
    h = layers.Rescaling(1 / 255)(inputs) if rescale else inputs
    for w in widths:
        h = layers.Conv2D(w, 3, padding="same", use_bias=not bn)(h)
        if bn:
            h = layers.BatchNormalization()(h)
        h = layers.ReLU()(h)
        h = layers.MaxPooling2D()(h)
    if dense:
        h = layers.Flatten()(h)
        h = layers.Dense(dense, activation="relu")(h)
    else:
        h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(classes, activation=None if logits else "softmax")(h)
    return keras.Model(inputs, out)


def _separable(shape, classes):
    """The first report's model: Rescaling, a strided stem, depthwise-separable blocks with
    BatchNorm, softmax."""
    import keras
    from keras import layers

    inputs = keras.Input(shape)
    h = layers.Rescaling(1 / 255)(inputs)
    h = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(h)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    for w in (32, 48, 64):
        h = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        h = layers.Conv2D(w, 1, use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        h = layers.MaxPooling2D()(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dropout(0.2)(h)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(h))


def _resnet_norm(shape, classes, x_train):
    """A small residual network behind a `Normalization` adapted to the 0-255 images."""
    import keras
    from keras import layers

    norm = layers.Normalization()
    norm.adapt(x_train.astype(np.float32))
    inputs = keras.Input(shape)
    h = norm(inputs)
    h = layers.Conv2D(16, 3, strides=2, padding="same")(h)
    h = layers.ReLU()(h)
    for w in (16, 32, 64):
        s = layers.Conv2D(w, 1, strides=2)(h)
        r = layers.Conv2D(w, 3, strides=2, padding="same", use_bias=False)(h)
        r = layers.ReLU()(layers.BatchNormalization()(r))
        r = layers.Conv2D(w, 3, padding="same", use_bias=False)(r)
        r = layers.BatchNormalization()(r)
        h = layers.ReLU()(layers.Add()([s, r]))
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(h))


def _mobilenet(shape, classes):
    """keras.applications MobileNetV2 (alpha 0.35, no pre-trained weights offline) as the
    backbone, MobileNet's [-1, 1] scaling in front and a trained classification head."""
    import keras
    from keras import layers

    inputs = keras.Input(shape)
    h = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    backbone = keras.applications.MobileNetV2(input_shape=shape, alpha=0.35,
                                              include_top=False, weights=None)
    for layer in backbone.layers:  # trained from scratch here: faster-moving statistics
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.9
    h = layers.GlobalAveragePooling2D()(backbone(h))
    h = layers.Dropout(0.2)(h)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(h))


# ----------------------------------------------------------------------------- tasks

# name: (what, data maker, model maker, epochs, augment, (train, val, test) sizes)
TASKS = {
    "photo3_96": dict(
        what="3 classes, 96x96 RGB, 450 images; Rescaling, separable blocks, BatchNorm, "
             "softmax; trained with flips and rotations (the first report's kind)",
        data=lambda n, seed: _shapes([0, 1, 2], n, 96, False, seed),
        model=lambda shape, k, x: _separable(shape, k), epochs=60, augment=True,
        sizes=(450, 90, 300), input_range="0-255"),
    "ring_or_disc_64_grey": dict(
        what="2 classes, 64x64 grey, 300 images; small CNN, logits, no augmentation",
        data=lambda n, seed: _shapes([0, 4], n, 64, True, seed),
        model=lambda shape, k, x: _small_cnn(shape, k, (8, 16, 32), logits=True),
        epochs=40, augment=False, sizes=(300, 100, 400), input_range="0-1"),
    "gratings20_32_grey": dict(
        what="20 classes, 32x32 grey, 3,000 images; CNN with a dense layer, softmax",
        data=lambda n, seed: _gratings(n, 32, 5, 4, seed),
        model=lambda shape, k, x: _small_cnn(shape, k, (16, 32, 64), dense=64),
        epochs=15, augment=False, sizes=(3000, 500, 1000), input_range="0-1"),
    "shapes6_32_logits": dict(
        what="6 classes, 32x32 RGB, 5,000 images; CNN with BatchNorm, logits; flips",
        data=lambda n, seed: _shapes(list(range(6)), n, 32, False, seed),
        model=lambda shape, k, x: _small_cnn(shape, k, (32, 64, 96), logits=True, bn=True),
        epochs=12, augment=True, sizes=(5000, 500, 1000), input_range="0-1"),
    "mobilenetv2_64": dict(
        what="6 classes, 64x64 RGB, 2,000 images; keras.applications MobileNetV2 (alpha "
             "0.35) with a head, [-1, 1] scaling; flips",
        data=lambda n, seed: _shapes(list(range(6)), n, 64, False, seed),
        model=lambda shape, k, x: _mobilenet(shape, k), epochs=20, augment=True,
        sizes=(2000, 300, 600), input_range="0-255"),
    "mlp4_48_grey": dict(
        what="4 classes, 48x48 grey, 1,200 images; a conv stem and a wide dense layer, "
             "Rescaling, softmax",
        data=lambda n, seed: _shapes([0, 1, 2, 3], n, 48, True, seed),
        model=lambda shape, k, x: _small_cnn(shape, k, (16, 32), rescale=True, dense=256),
        epochs=25, augment=False, sizes=(1200, 200, 600), input_range="0-255"),
    "resnet5_64_norm": dict(
        what="5 classes, 64x64 RGB, 1,000 images; residual CNN behind Normalization, "
             "softmax; flips and rotations",
        data=lambda n, seed: _shapes([0, 1, 2, 3, 5], n, 64, False, seed),
        model=lambda shape, k, x: _resnet_norm(shape, k, x), epochs=30, augment=True,
        sizes=(1000, 200, 500), input_range="0-255"),
    "gratings8_128_grey": dict(
        what="8 classes, 128x128 grey, 600 images; strided CNN, Rescaling, softmax",
        data=lambda n, seed: _gratings(n, 128, 4, 2, seed),
        model=lambda shape, k, x: _small_cnn(shape, k, (8, 16, 32, 32), rescale=True),
        epochs=30, augment=False, sizes=(600, 150, 400), input_range="0-255"),
}


def _augment(x, rng):
    """Random horizontal flips and quarter turns of a batch (square images)."""
    x = x.copy()
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    turns = rng.integers(0, 4, len(x))
    for t in (1, 2, 3):
        x[turns == t] = np.rot90(x[turns == t], t, axes=(1, 2))
    return x


def prepare(name: str, work: Path) -> Path:
    """The task's folder with train/val/test `.npz` and its trained `model.keras`."""
    import keras

    task = TASKS[name]
    folder = work / name
    if (folder / "model.keras").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    n_train, n_val, n_test = task["sizes"]
    x, y = task["data"](n_train + n_val + n_test, seed=sum(map(ord, name)))
    parts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val),
             "test": slice(n_train + n_val, None)}
    for part, s in parts.items():
        np.savez(folder / f"{part}.npz", x=x[s], y=y[s])
    classes = int(y.max()) + 1
    keras.utils.set_random_seed(0)
    xt, yt = x[parts["train"]], y[parts["train"]]
    model = task["model"](xt.shape[1:], classes, xt)
    logits = model.layers[-1].get_config().get("activation") == "linear"
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
                  metrics=["accuracy"])
    def feed(a):  # the owner's input range: 0-255 for models that scale inside
        return a.astype(np.float32) / (1.0 if task["input_range"] == "0-255" else 255.0)

    rng = np.random.default_rng(0)
    xv, yv = feed(x[parts["val"]]), y[parts["val"]]
    best, best_weights = -1.0, None
    for _ in range(task["epochs"]):
        xe = _augment(xt, rng) if task["augment"] else xt
        model.fit(feed(xe), yt, batch_size=32, epochs=1, verbose=0, shuffle=True)
        acc = model.evaluate(xv, yv, verbose=0)[1]
        if acc >= best:
            best, best_weights = acc, model.get_weights()
    model.set_weights(best_weights)
    model.save(folder / "model.keras")
    info = {"val_accuracy": round(100 * best, 2), "params": model.count_params()}
    (folder / "model.json").write_text(json.dumps(info))
    print(f"{name}: trained, validation accuracy {info['val_accuracy']} %, "
          f"{info['params']:,} parameters", flush=True)
    return folder


def compress_task(name: str, folder: Path, recipe: str, label: str) -> dict:
    """Runs `compress` on the task with `recipe` and returns its row (named `label`)."""
    import shutil

    import tfcompress as tfc

    out = folder / f"out_{label}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = tfc.compress(str(folder / "model.keras"), str(folder / "train.npz"), recipe,
                          str(out), val=str(folder / "val.npz"),
                          test=str(folder / "test.npz"),
                          progress=lambda line: print(f"  {name}: {line}", flush=True))
    seconds = time.perf_counter() - start
    ratios = result.ratios()
    return {"task": name, "recipe": label, "commit": _commit(),
            "baseline_accuracy": round(100 * result.baseline.accuracy, 2),
            "final_accuracy": round(100 * result.final.accuracy, 2),
            "delta": ratios["accuracy_delta"], "meets_budget": ratios["meets_budget"],
            "smaller": ratios["smaller"], "smaller_gzip": ratios["smaller_gzip"],
            "faster": ratios["faster_p50"], "minutes": round(seconds / 60, 1),
            "steps": [s.description + (f" [skipped: {s.skipped}]" if s.skipped else "")
                      for s in result.steps],
            "choices": (result.recipe.get("choices") or [])}


def _commit() -> str:
    """The commit of the code this process runs (read once, when first asked)."""
    if _COMMIT:
        return _COMMIT[0]
    try:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_package_dir(),
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found = "unknown"
    _COMMIT.append(found)
    return found


_COMMIT: list[str] = []


def _package_dir() -> str:
    import tfcompress

    return os.path.dirname(os.path.dirname(tfcompress.__file__))


def markdown(rows: list[dict]) -> str:
    lines = ["# The user-like suite", "",
             "Each task's model compressed under the default budget (1 point of top-1 on its "
             "test images, which nothing was chosen on). Ratios: float32 baseline file over "
             "the final file; speed-ups timed side by side in LiteRT (1 thread) at the end of "
             "each run. Produced by `python models/suite/suite.py --recipe <name>`; the "
             "commit column says which code ran.", "",
             "Recipes: `auto` is the default; `auto (last epoch)` fine-tunes without keeping "
             "each fine-tuning's best epoch (`--no-restore-best`); `auto (cosine lr)` lowers "
             "the learning rate along a cosine (`--cosine-lr`; stopped after three tasks, two "
             "of them outside the budget); `auto (teacher)` fine-tunes every prune, factorize "
             "and qat step with the input model as teacher, soft targets beside the labels "
             "(`--teacher`: as many tasks within the budget and the same median ratios, but "
             "less accurate on 5 of 8 tasks, most where the fine-tuning outgrows an "
             "undertrained baseline, so it stays off); `default (a7c113e)` is the built-in "
             "`default` recipe before budget-first compression (see this script's "
             "docstring).", "",
             "| task | recipe | baseline % | final % | change | verdict | smaller | gzip | "
             "faster | minutes | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (list(TASKS).index(r["task"]), r["recipe"])):
        verdict = "within" if r["meets_budget"] else "**outside**"
        lines.append(f"| {r['task']} | {r['recipe']} | {r['baseline_accuracy']:.2f} | "
                     f"{r['final_accuracy']:.2f} | {r['delta']:+.2f} | {verdict} | "
                     f"{r['smaller']:.2f}x | {r['smaller_gzip']:.2f}x | {r['faster']:.2f}x | "
                     f"{r['minutes']} | {r['commit']} |")
    lines += ["", "Medians per recipe:", "", "| recipe | tasks | within budget | smaller | "
              "gzip | faster |", "|---|---|---|---|---|---|"]
    for recipe in sorted({r["recipe"] for r in rows}):
        sub = [r for r in rows if r["recipe"] == recipe]
        lines.append(f"| {recipe} | {len(sub)} | {sum(r['meets_budget'] for r in sub)} | "
                     f"{np.median([r['smaller'] for r in sub]):.2f}x | "
                     f"{np.median([r['smaller_gzip'] for r in sub]):.2f}x | "
                     f"{np.median([r['faster'] for r in sub]):.2f}x |")
    lines += ["", "The tasks:", ""]
    lines += [f"- **{name}**: {task['what']}." for name, task in TASKS.items()]
    lines += ["", "Each run's steps (and why a step was skipped) are in `results.json`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="auto")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(),
                                                       "tfcompress-suite"))
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--no-restore-best", action="store_true",
                        help="Fine-tune without keeping each fine-tuning's best epoch on the "
                             "validation data (to measure what that choice brings).")
    parser.add_argument("--label", help="How the rows are named (default: the recipe and the "
                                        "options), e.g. for a run of an older commit.")
    parser.add_argument("--cosine-lr", action="store_true",
                        help="Fine-tune with the learning rate lowered along a half cosine.")
    parser.add_argument("--teacher", action="store_true",
                        help="Fine-tune every prune, factorize and qat step with the input "
                             "model as teacher (soft targets beside the labels).")
    args = parser.parse_args()
    label = args.recipe
    if args.no_restore_best:
        from tfcompress.pipeline import _steps

        _steps.RESTORE_BEST = False
        label += " (last epoch)"
    if args.cosine_lr:
        from tfcompress.pipeline import _steps

        _steps.COSINE_LR = True
        label += " (cosine lr)"
    if args.teacher:
        from tfcompress.pipeline import _steps

        _steps.TEACHER = True
        label += " (teacher)"
    label = args.label or label
    work = Path(args.work)
    _commit()
    results_path = HERE / "results.json"
    for name in args.tasks:
        folder = prepare(name, work)
        if args.train_only:
            continue
        row = compress_task(name, folder, args.recipe, label)
        with open(HERE / ".results.lock", "w") as lock:  # runs of two recipes at once
            fcntl.flock(lock, fcntl.LOCK_EX)
            rows = json.loads(results_path.read_text()) if results_path.exists() else []
            rows = [r for r in rows if (r["task"], r["recipe"]) != (name, label)] + [row]
            results_path.write_text(json.dumps(rows, indent=2) + "\n")
            (HERE / "results.md").write_text(markdown(rows))
        print(f"{name} ({label}): {row['delta']:+.2f} points, "
              f"{'within' if row['meets_budget'] else 'OUTSIDE'} budget, "
              f"{row['smaller']}x smaller, {row['faster']}x faster, {row['minutes']} min",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
