"""Metrics: top-1, top-5, Keras metrics and functions, each with its direction, in the budget,
the searches, `bench` and the command line."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress import _tflite
from tfcompress.bench import benchmark
from tfcompress.export import to_tflite
from tfcompress.metrics import Metric
from tfcompress.pipeline import compress
from tfcompress.pipeline._run import PipelineResult, StepRecord


def test_names_directions_and_scores():
    y = np.array([0, 1, 2, 3])
    logits = np.array([[9, 1, 0, 0, 0, 0], [0, 1, 9, 0, 0, 0], [0, 0, 0, 0, 0, 9],
                       [0, 0, 0, 9, 8, 0]], float)
    assert Metric("top1").score([(y, logits)]) == 0.5
    assert Metric("top2").score([(y, logits)]) == 0.75  # label 1 is second in row 1
    assert Metric("top5").score([(y[:2], logits[:2]), (y[2:], logits[2:])]) == 1.0
    assert Metric("accuracy").name == "top1"
    mse = Metric("mse")
    assert (mse.direction, mse.percent, mse.name) == ("min", False, "mean_squared_error")
    assert mse.score([(np.zeros((2, 3)), np.ones((2, 3)))]) == pytest.approx(1.0)
    assert Metric(keras.metrics.AUC()).direction == "max"
    assert mse.worse_by(0.3, 0.1) == pytest.approx(0.2)
    assert Metric("top1").worse_by(0.90, 0.95) == pytest.approx(5.0)  # points
    custom = Metric(lambda t, p: np.abs(t - p).max(axis=-1), direction="min", name="peak")
    assert custom.score([(np.zeros((2, 2)), np.array([[1, 3], [0, 1]]))]) == 2.0
    with pytest.raises(ValueError, match="needs a direction: 'max' if higher is better"):
        Metric(lambda t, p: 0.0)
    with pytest.raises(ValueError, match="Unknown metric 'top-five'"):
        Metric("top-five")


def test_the_budget_follows_the_metric_direction():
    def result(metric, base, final, budget):
        rec = StepRecord(0, "baseline", "", "", "", 1, 1, 1, 1.0, 1.0, base, 0.0, 0.0)
        end = StepRecord(1, "qat", "", "", "", 1, 1, 1, 1.0, 1.0, final,
                         round(metric.display(final) - metric.display(base), 6), 0.0)
        return PipelineResult({}, "d", 0, rec, (end,), budget, ".", metric=metric.to_dict())

    assert result(Metric("mse"), 0.010, 0.014, 0.005).meets_budget  # 0.004 worse
    assert not result(Metric("mse"), 0.010, 0.016, 0.005).meets_budget
    assert result(Metric("mse"), 0.010, 0.002, 0.0).meets_budget  # better is always fine
    assert not result(Metric("top5"), 0.99, 0.97, 1.0).meets_budget  # 2 points down


@pytest.fixture(scope="module")
def autoencoder(mnist):
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = keras.layers.UpSampling2D()(h)
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(h)
    model = keras.Model(inp, out, name="autoencoder")
    model.compile(optimizer="adam", loss="mse")
    model.fit(mnist.x_train[:2000], mnist.x_train[:2000], epochs=3, batch_size=64, verbose=0)
    return model


def test_an_autoencoder_is_compressed_under_a_reconstruction_error_budget(autoencoder, mnist,
                                                                          tmp_path):
    pairs = tf.data.Dataset.from_tensor_slices
    train = pairs((mnist.x_train[:1500], mnist.x_train[:1500])).batch(64)
    val = pairs((mnist.x_train[1500:1800], mnist.x_train[1500:1800])).batch(100)
    test = pairs((mnist.x_test[:200], mnist.x_test[:200])).batch(100)
    recipe = {"name": "ae", "steps": [{"qat": {"epochs": 1}}, {"export": {"mode": "int8"}}]}
    with pytest.raises(ValueError, match="not a percentage.*pass max_accuracy_drop"):
        compress(autoencoder, train, recipe, tmp_path / "x", val=val, test=test,
                 metric="mse")
    assert not (tmp_path / "x").exists()
    result = compress(autoencoder, train, recipe, tmp_path / "ae", val=val, test=test,
                      metric="mse", max_accuracy_drop=0.01, runs=3)
    assert result.metric == {"name": "mean_squared_error", "direction": "min",
                             "percent": False}
    base, final = result.baseline.accuracy, result.final.accuracy
    assert 0 < base < 0.05 and 0 < final < 0.05 and result.meets_budget
    # The figure is the int8 file's own reconstruction error, measured independently.
    x = mnist.x_test[:200]
    out = _tflite.run(_tflite.interpreter(result.final.tflite_path), x)
    assert final == pytest.approx(float(np.mean((out - x) ** 2)), rel=1e-4)
    assert result.final.delta == pytest.approx(final - base, abs=1e-4)
    md = (tmp_path / "ae" / "report.md").read_text()
    assert "mean_squared_error" in md and "lower is better" in md


def test_top5_in_bench_and_in_a_search(trained_cnn, mnist, tmp_path):
    path = to_tflite(trained_cnn, tmp_path / "m.tflite", "float32").path
    data = (mnist.x_test[:300], mnist.y_test[:300])
    top1 = benchmark(path, data, runs=2)
    top5 = benchmark(path, data, runs=2, metric="top5")
    assert top5.metric == "top5" and top1.accuracy < top5.accuracy <= 1.0
    recipe = {"name": "s", "steps": [
        {"prune": {"granularity": "unstructured", "epochs": 1},
         "search": {"values": [0.5, 0.95]}},
        {"export": {"mode": "int8"}}]}
    small = (mnist.x_train[:1200], mnist.y_train[:1200])
    from tfcompress.data import Dataset

    ds = Dataset(*small, mnist.x_test[:300], mnist.y_test[:300])
    result = compress(trained_cnn, ds, recipe, tmp_path / "s", metric="top5",
                      max_accuracy_drop=0.5, runs=3)
    rows = result.steps[0].search
    assert [r["sparsity"] for r in rows] == [0.5, 0.95]
    chosen = next(r for r in rows if r["chosen"])
    base = json.loads((tmp_path / "s" / "state.json").read_text())["baseline_val_accuracy"]
    share = 0.5 * 0.75  # the prune step's share of the budget (the int8 file has the rest)
    for r in rows:  # the verdict of every value is the top-5 budget on the validation data
        assert r["within_budget"] == (100 * (base - r["val_accuracy"]) <= share + 1e-9)
    assert chosen["within_budget"] or not any(r["within_budget"] for r in rows)


def test_the_cli_takes_a_metric_and_refuses_an_unknown_one(trained_cnn_path, tmp_path):
    from click.testing import CliRunner

    from tfcompress.cli import main

    out = tmp_path / "out"
    runner = CliRunner()
    bad = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist", "-o",
                               str(out), "--metric", "top-five"])
    assert bad.exit_code == 1 and "Unknown metric 'top-five'" in bad.output
    assert "Traceback" not in bad.output and not out.exists()
    no_budget = runner.invoke(main, ["compress", str(trained_cnn_path), "--data", "mnist", "-o",
                                     str(out), "--metric", "mae"])
    assert no_budget.exit_code == 1 and "--max-accuracy-drop" in no_budget.output
    assert not out.exists()


def test_a_sensitivity_scan_scores_by_the_metric_and_its_direction(autoencoder, trained_cnn,
                                                                    mnist):
    from tfcompress.debug import sensitivity

    x = mnist.x_test[:100]
    scan = sensitivity(autoencoder, (x, x), "prune", num_samples=100, metric="mse")
    assert scan.metric["direction"] == "min" and 0 < scan.baseline < 0.05
    for layer in scan.layers:  # pruning a layer raises the error: a positive drop
        assert layer.drop == pytest.approx(layer.accuracy - scan.baseline)
    assert max(s.drop for s in scan.layers) > 0
    assert "worse by" in str(scan) and "mean_squared_error" in str(scan)
    q = sensitivity(autoencoder, (x, x), "quantize", num_samples=100, metric="mse")
    assert q.float_layers(budget=1.0) == []  # within a huge budget nothing stays float
    assert q.float_layers(budget=0.0, min_drop=0.0)  # with none, the worst layer does
    data = (mnist.x_test[:200], mnist.y_test[:200])
    top1 = sensitivity(trained_cnn, data, "prune", num_samples=200)
    top5 = sensitivity(trained_cnn, data, "prune", num_samples=200, metric="top5")
    assert top1.metric["name"] == "top1" and top5.baseline >= top1.baseline
