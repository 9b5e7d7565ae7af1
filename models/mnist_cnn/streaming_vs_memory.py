"""The same compression fed three ways: NumPy arrays in memory, tf.data streams, and a folder of
PNGs decoded a batch at a time.

    python models/mnist_cnn/streaming_vs_memory.py [--seeds 0 1 2]

The reference CNN (2 epochs on mnist) goes through the `quick` recipe (channel pruning 50 %,
QAT, int8 export) with `compress`, on the same training, validation and test images each
time:

- arrays: a `Dataset` of NumPy arrays (training shuffled by `model.fit`);
- tf.data: `tf.data.Dataset` streams (training shuffled by the stream, seeded);
- folder: the images written as PNGs (exact: mnist is 8-bit) and read by `load(folder)`,
  which decodes a batch at a time.

Int8 accuracy is measured in LiteRT on the 1,000 test images. Writes
`streaming_vs_memory.json` and `.md` beside this script.
"""

import argparse
import json
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import tfcompress as tfc
from tfcompress.data import Dataset, FilesPart

HERE = Path(__file__).parent


def folder_parts(root: Path, parts: dict) -> dict:
    """Each part written as PNGs under root/<part>/<label>/ and read back as a FilesPart."""
    out = {}
    for name, (x, y) in parts.items():
        files = []
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            path = root / name / str(label) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(path)
            files.append(str(path))
        out[name] = FilesPart(tuple(files), y, (28, 28), "L", name="mnist PNGs")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    mnist = tfc.data.load("mnist")
    model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
    model.fit(mnist.x_train, mnist.y_train, epochs=2, batch_size=64, verbose=0)
    rest, (x_val, y_val) = mnist.hold_out(seed=0)
    parts = {"train": (rest.x_train, rest.y_train), "val": (x_val, y_val),
             "test": (mnist.x_test, mnist.y_test)}
    work = Path(tempfile.mkdtemp(prefix="tfc-stream-"))
    files = folder_parts(work / "png", parts)
    for name, part in files.items():  # the PNG round trip is exact
        assert np.array_equal(part.head()[0], parts[name][0]), name
    rows = []
    for seed in args.seeds:
        def stream(name: str, shuffle: bool = False, seed: int = seed):
            x, y = parts[name]
            ds = tf.data.Dataset.from_tensor_slices((x, y))
            if shuffle:
                ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            return ds.batch(64)

        feeds = {  # (data, val, test): data's test part scores when test is None
            "arrays (in memory)": (Dataset(*parts["train"], *parts["test"]), parts["val"],
                                   None),
            "tf.data streams": (stream("train", shuffle=True), stream("val"), stream("test")),
            "PNG folder (decoded per batch)": (
                Dataset.from_parts(files["train"], files["test"], name="mnist PNGs"),
                files["val"], None),
        }
        for feed, (data, val, test) in feeds.items():
            result = tfc.compress(model, data, "quick", work / f"{seed}-{len(rows)}", val=val,
                                  test=test, seed=seed, runs=20, progress=False)
            rows.append({"seed": seed, "feed": feed, "baseline": result.baseline.accuracy,
                         "int8": result.final.accuracy, "delta": result.final.delta})
            print(json.dumps(rows[-1]), flush=True)
    write(rows)


def write(rows: list[dict]) -> None:
    (HERE / "streaming_vs_memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    feeds = list(dict.fromkeys(r["feed"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# The same compression fed from arrays, tf.data streams and a PNG folder", "",
             "Produced by `python models/mnist_cnn/streaming_vs_memory.py`: the reference CNN "
             "(2 epochs on mnist), recipe `quick` (channel pruning 50 %, QAT, int8), the same "
             "3,600 training, 400 validation and 1,000 test images each time; int8 accuracy in "
             "LiteRT on the test images.", "",
             "| feed | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for feed in feeds:
        mine = [r["int8"] for r in rows if r["feed"] == feed]
        lines.append(f"| {feed} | " + " | ".join(f"{100 * a:.2f} %" for a in mine)
                     + f" | {100 * np.mean(mine):.2f} % |")
    base = np.mean([r["int8"] for r in rows if r["feed"] == feeds[0]])
    for feed in feeds[1:]:
        mean = np.mean([r["int8"] for r in rows if r["feed"] == feed])
        lines.append(f"\n{feed} against {feeds[0]}: {100 * (mean - base):+.2f} points (mean).")
    (HERE / "streaming_vs_memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
