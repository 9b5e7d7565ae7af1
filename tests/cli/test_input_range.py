"""The input-range trap: a model that rescales 0-255 pixels itself, fed [0, 1] images, scores
at chance. Every figure that could be chance-level is said to be, and the right range is one
option away (issue 23, item 4)."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from tfcompress.cli import main


@pytest.fixture(scope="module")
def rescaling_model(tmp_path_factory):
    """A classifier with Rescaling(1/255) inside, trained on 0-255 pixels, and a folder of
    its test images (three classes)."""
    import tfcompress as tfc

    root = tmp_path_factory.mktemp("rescale")
    ds = tfc.data.load("mnist")
    keep = np.isin(ds.y_train, [0, 1, 2])
    x, y = ds.x_train[keep] * 255.0, ds.y_train[keep]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for filters in (16, 32):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    folder = root / "test"
    test_keep = np.isin(ds.y_test, [0, 1, 2])
    for i, (image, label) in enumerate(zip(ds.x_test[test_keep], ds.y_test[test_keep],
                                           strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[:, :, 0] * 255).astype(np.uint8)).save(
            folder / str(label) / f"{i}.png")
    model.save(root / "model.keras")
    tflite = root / "model.tflite"
    tfc.export.to_tflite(model, tflite, "float32")
    return root, int(test_keep.sum())


def _warnings(result):
    return [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]


def test_bench_reads_all_of_a_folder_in_the_range_the_file_records(runner, rescaling_model):
    root, images = rescaling_model
    args = ["bench", str(root / "model.tflite"), "--data", str(root / "test"), "--json"]
    right = runner.invoke(main, args)  # the file's metadata says 0-255 pixels
    assert right.exit_code == 0, right.output
    report = json.loads(right.stdout)[0]
    assert report["num_samples"] == images  # the whole folder, not its "test split"
    assert report["accuracy"] > 0.7 and not _warnings(right)  # 79 %: chance is 33 %
    wrong = runner.invoke(main, args + ["--input-range", "0-1"])
    said = " ".join(_warnings(wrong))
    assert "metadata says it takes images scaled to 0-255" in said
    assert "no better than chance for 3 classes" in said
    assert json.loads(wrong.stdout)[0]["accuracy"] < report["accuracy"] - 0.2
    test_part = runner.invoke(main, args + ["--split", "test"])
    assert json.loads(test_part.stdout)[0]["num_samples"] < images


def test_a_range_that_contradicts_the_model_is_said_before_the_figures(runner,
                                                                       rescaling_model,
                                                                       tmp_path):
    root, _ = rescaling_model
    result = runner.invoke(main, ["export", str(root / "model.keras"), "-o",
                                  str(tmp_path / "m.tflite"), "--target", "tflm", "--data",
                                  str(root / "test"), "--input-range", "0-1"])
    assert result.exit_code == 0, result.output
    said = " ".join(_warnings(result))
    assert "model expects 0-255 (read from the model's layer 'rescale')" in said
    assert "all puts in class" in said  # an agreement of constant predictions says nothing
    follows = runner.invoke(main, ["export", str(root / "model.keras"), "-o",
                                   str(tmp_path / "n.tflite"), "--target", "tflm", "--data",
                                   str(root / "test")])
    assert follows.exit_code == 0 and not _warnings(follows)


def test_compress_says_when_its_baseline_is_at_chance(rescaling_model, tmp_path):
    from tfcompress.pipeline import compress

    root, _ = rescaling_model
    fast = {"steps": [{"export": {"mode": "float16"}}]}
    result = compress(str(root / "model.keras"), str(root / "test"), fast, tmp_path / "out",
                      runs=3, progress=False, preprocessing="0-1")
    assert any("no better than chance for 3 classes" in w for w in result.warnings)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "no better than chance" in report


def test_debug_reads_the_range_from_the_file_when_the_model_does_not_say(runner, trained_cnn,
                                                                         tmp_path):
    """A model that scales 0-255 pixels with a 1x1 convolution (no Rescaling to read): the
    file's metadata says 0-255, and debug feeds that without --input-range."""
    import tfcompress as tfc

    inputs = keras.Input((28, 28, 1))
    scale = keras.layers.Conv2D(1, 1, use_bias=False, name="scale")
    model = keras.Model(inputs, trained_cnn(scale(inputs)))
    scale.set_weights([np.full((1, 1, 1, 1), 1 / 255, np.float32)])
    model.save(tmp_path / "m.keras")
    images = tfc.data.load("mnist", preprocessing="0-255")
    tfc.export.to_tflite(model, tmp_path / "m.tflite", "int8", representative_data=images)

    def first_layer_cosine(*extra):
        out = tmp_path / f"debug{len(extra)}"
        result = runner.invoke(main, ["debug", str(tmp_path / "m.keras"),
                                      str(tmp_path / "m.tflite"), "--data", "mnist",
                                      "--samples", "16", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        layers = json.loads((out / "layer_errors.json").read_text())["layers"]
        return min(row["cosine"] for row in layers)

    right, wrong = first_layer_cosine(), first_layer_cosine("--input-range", "0-1")
    assert right > 0.999 and wrong < 0.99  # 0-255 pixels: what the file was calibrated on
