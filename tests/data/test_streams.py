"""Streaming input: tf.data, PyDataset and generator functions wherever data goes, image
folders decoded a batch at a time, and bad streams stopped at their first bad batch."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfcompress as tfc
from tfcompress import _training
from tfcompress.bench import benchmark
from tfcompress.data import Dataset, FilesPart, StreamPart, _parts, load
from tfcompress.export import to_tflite
from tfcompress.pipeline import compress

RECIPE = {"name": "stream", "steps": [{"qat": {"epochs": 1}}, {"export": {"mode": "int8"}}]}


def batched(x, y, size=50):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(size)


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size=50):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        s = slice(i * self.size, (i + 1) * self.size)
        return self.x[s], self.y[s]


def test_every_kind_of_stream_scores_and_calibrates_as_the_same_arrays(trained_cnn, mnist,
                                                                       tmp_path):
    x, y = mnist.x_test[:300], mnist.y_test[:300]

    def generator_function():
        for i in range(0, 300, 64):
            yield x[i : i + 64], y[i : i + 64]

    expected = _training.evaluate(trained_cnn, (x, y))
    for stream in (batched(x, y), Batches(x, y), generator_function,
                   batched(x, keras.utils.to_categorical(y, 10))):  # one-hot labels too
        assert _training.evaluate(trained_cnn, stream) == pytest.approx(expected)
    path = to_tflite(trained_cnn, tmp_path / "m.tflite", "int8",
                     representative_data=Batches(mnist.x_train[:200], mnist.y_train[:200])).path
    by_arrays = benchmark(path, (x, y), runs=2)
    for stream in (batched(x, y), Batches(x, y), generator_function):
        report = benchmark(path, stream, runs=2)
        assert report.accuracy == by_arrays.accuracy and report.num_samples == 300
    assert by_arrays.accuracy > 0.9


def test_a_run_on_streams_trains_on_them_and_scores_the_test_stream(trained_cnn, mnist,
                                                                     tmp_path):
    train = batched(mnist.x_train[:1200], mnist.y_train[:1200], 64)
    val = Batches(mnist.x_train[1200:1500], mnist.y_train[1200:1500])
    test = batched(mnist.x_test[:300], mnist.y_test[:300])
    result = compress(trained_cnn, train, RECIPE, tmp_path / "a", val=val, test=test, runs=3,
                      max_accuracy_drop=5.0)
    assert result.final.accuracy > 0.85 and result.meets_budget
    arrays = (mnist.x_test[:300], mnist.y_test[:300])
    assert benchmark(result.final.tflite_path, arrays, runs=2).accuracy == result.final.accuracy
    assert "a stream" in result.data_sources["train"]
    assert result.data_sources["input"] == "as the stream yields them"
    # Without test data the validation stream scores, and the report says so.
    again = compress(trained_cnn, train, RECIPE, tmp_path / "b", val=val, runs=3,
                     max_accuracy_drop=5.0)
    assert any("no test data was given" in w for w in again.warnings)
    # A stream cannot be split: without val the run stops before any work.
    with pytest.raises(ValueError, match="cannot split.*val="):
        compress(trained_cnn, train, RECIPE, tmp_path / "c", runs=3)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("case, message", [
    ("unbatched", r"batch 0 is one sample .*dataset.batch\(64\)"),
    ("unbatched images", r"expects images of shape \(28, 28, 1\), but the data has "
                         r"\(28, 1\).*dataset.batch"),
    ("strings", r"batch 0 holds <U1 inputs"),
    ("labels", r"labels up to 12, but the model 'reference_cnn' has 10 outputs"),
    ("later", r"batch 2 has inputs of shape \(14, 14, 1\).*batch 0 had \(28, 28, 1\)"),
    ("generator", r"A generator can be read only once"),
    ("repeat", r"never ends \(it repeats\).*Remove the .repeat\(\)"),
])
def test_a_bad_stream_stops_at_its_first_bad_batch_with_one_line(trained_cnn, mnist, tmp_path,
                                                                  case, message):
    x, y = mnist.x_train[:200], mnist.y_train[:200]

    def later():
        for i in range(4):
            images = x[i * 50 : (i + 1) * 50]
            yield (images[:, ::2, ::2] if i == 2 else images), y[i * 50 : (i + 1) * 50]

    stream = {
        "unbatched": lambda: tf.data.Dataset.from_tensor_slices((x, y)),
        "unbatched images": lambda: (lambda: iter(x)),
        "strings": lambda: (lambda: iter([(np.full((4, 28, 28, 1), "a"), y[:4])])),
        "labels": lambda: batched(x, np.where(y == 3, 12, y)),
        "later": lambda: later,
        "generator": lambda: later(),
        "repeat": lambda: batched(x, y).repeat(),
    }[case]()
    val = batched(mnist.x_test[:100], mnist.y_test[:100])
    with pytest.raises((ValueError, TypeError), match=message) as error:
        compress(trained_cnn, stream, RECIPE, tmp_path / "out", val=val, runs=2)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def _folder(root, count=60, size=(20, 24)):
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def test_a_folder_is_decoded_a_batch_at_a_time_into_the_pixels_it_always_gave(tmp_path,
                                                                                monkeypatch):
    _folder(tmp_path / "imgs")
    reads = []
    real = _parts.read_image
    monkeypatch.setattr(_parts, "read_image", lambda *a: reads.append(a[0]) or real(*a))
    ds = load(tmp_path / "imgs", image_size=16, preprocessing="-1-1")
    assert isinstance(ds.train, FilesPart) and ds.streamed and reads == []
    assert (ds.train.size, ds.test.size, ds.class_names) == (48, 12, ("even", "odd"))
    x, y = next(ds.train.batches(8))
    assert len(reads) == 8 and x.shape == (8, 16, 16, 3) and x.dtype == np.float32
    with Image.open(reads[0]) as im:  # the in-memory loader's pixels: RGB, bilinear, [0, 1]
        expected = np.asarray(im.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR),
                              np.float32) / 255.0
    np.testing.assert_allclose(x[0], expected * 2 - 1, atol=1e-6)
    assert y[0] == (0 if "even" in reads[0] else 1)
    # Training reads it through a PyDataset: a new seeded order every epoch, every image once.
    fit = ds.train.fit_args(16, seed=1)["x"]
    first = np.concatenate([fit[i][1] for i in range(len(fit))])
    fit.on_epoch_end()
    second = np.concatenate([fit[i][1] for i in range(len(fit))])
    assert sorted(first.tolist()) == sorted(second.tolist()) == sorted(ds.train.labels.tolist())


def test_a_broken_file_in_a_folder_fails_at_load_before_any_work(tmp_path):
    _folder(tmp_path / "imgs", count=10)
    (tmp_path / "imgs" / "odd" / "999.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Could not read the image .*999.png"):
        load(tmp_path / "imgs")


def test_a_folder_trains_on_two_devices_through_the_cli(trained_cnn_path, mnist, tmp_path,
                                                        mirrored):
    from click.testing import CliRunner

    from tfcompress.cli import main

    for i, (image, label) in enumerate(zip(mnist.x_train[:600], mnist.y_train[:600],
                                           strict=True)):
        folder = tmp_path / "digits" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(RECIPE))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "compress", str(trained_cnn_path), "--data", str(tmp_path / "digits"), "--recipe",
        str(recipe), "-o", str(out), "--runs", "2", "--distribute", "mirrored",
        "--max-accuracy-drop", "10", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert "on 2 devices" in report["data_sources"]["train"]
    assert report["final"]["accuracy"] > 0.8


def test_dataset_from_streams_feeds_the_training_functions(trained_cnn, mnist):
    ds = Dataset.from_streams(batched(mnist.x_train[:600], mnist.y_train[:600], 64),
                              Batches(mnist.x_test[:200], mnist.y_test[:200]))
    assert repr(ds).startswith("Dataset(name='stream', train=stream, test=stream")
    q, result = tfc.quantization.train_quantized(trained_cnn, ds, epochs=1)
    assert result.accuracy_qat > 0.85
    with pytest.raises(TypeError, match=r"Dataset.from_streams\(train, test\)"):
        load(batched(mnist.x_train[:10], mnist.y_train[:10]))
    with pytest.raises(ValueError, match="cannot split"):
        ds.hold_out()
    assert isinstance(ds.train, StreamPart)


def test_distillation_and_sensitivity_read_streams(trained_cnn, mnist):
    from tfcompress.debug import sensitivity
    from tfcompress.distillation import distill, make_student

    train = batched(mnist.x_train[:600], mnist.y_train[:600], 64)
    test = Batches(mnist.x_test[:200], mnist.y_test[:200])
    student, result = distill(trained_cnn, make_student(trained_cnn, 0.5),
                              Dataset.from_streams(train, test), epochs=1)
    assert result.teacher_accuracy > 0.9 and 0.1 < result.student_accuracy <= 1.0
    by_stream = sensitivity(trained_cnn, test, "prune", num_samples=150)
    by_arrays = sensitivity(trained_cnn, (mnist.x_test[:150], mnist.y_test[:150]), "prune")
    assert by_stream.samples == 150 and by_stream.to_dict()["layers"] == by_arrays.to_dict(
        )["layers"]


def test_a_tf_data_stream_whose_image_size_changes_stops_with_one_line(trained_cnn, mnist):
    import tensorflow as tf

    from tfcompress import _training

    x, y = mnist.x_train[:128], mnist.y_train[:128]
    same = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    smaller = tf.data.Dataset.from_tensor_slices((x[:64, :14, :14], y[:64])).batch(64)
    model = keras.models.clone_model(trained_cnn)
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"batch 2 has inputs of shape \(14, 14, 1\).*but "
                                         r"batch 0 had \(28, 28, 1\)"):
        _training.fit(model, same.concatenate(smaller), epochs=1, verbose=0)
