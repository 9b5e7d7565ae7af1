"""Budget-first compression: back-off searches within each step's share of the budget, steps
that cannot stay within it skipped, QAT that loses replaced by post-training int8, and the
`auto` recipe made from the model and the data."""

import json
import math

import keras
import numpy as np
import pytest

from tfcompress.data import Dataset
from tfcompress.pipeline import _steps, compress
from tfcompress.pipeline._auto import auto_recipe
from tfcompress.pipeline._recipe import AUTO, BUILTIN, Recipe, load_recipe


@pytest.fixture(scope="module")
def small(mnist):
    return Dataset(mnist.x_train[:1200], mnist.y_train[:1200], mnist.x_test[:300],
                   mnist.y_test[:300], name="mnist-small")


def _base_val(folder) -> float:
    return json.loads((folder / "state.json").read_text())["baseline_val_accuracy"]


def test_shares_grow_step_by_step_and_leave_room_for_the_integer_file():
    plan = Recipe.from_dict({"steps": [
        {"distill": {}}, {"prune": {"sparsity": 0.5}}, {"qat": {}}, {"export": {}}]})
    assert [plan.share(i) for i in (1, 2, 3, 4)] == [0.375, 0.75, 1.0, 1.0]
    float_only = Recipe.from_dict({"steps": [{"prune": {"sparsity": 0.5}},
                                             {"export": {"mode": "float32"}}]})
    assert float_only.share(1) == 1.0


def test_every_builtin_recipe_backs_off_and_auto_is_the_default():
    for name, config in BUILTIN.items():
        plan = Recipe.from_dict(config)
        for step in plan.steps:
            if step.kind in ("distill", "prune", "factorize"):
                assert step.search is not None and step.search.strategy == "backoff", name
        assert plan.steps[-1].get("float_layers") == "auto", name
    assert load_recipe(None).is_auto and load_recipe(AUTO).is_auto
    assert not load_recipe("default").is_auto
    with pytest.raises(ValueError, match="a list of layers needs no qat step"):
        Recipe.from_dict({"steps": [{"qat": {}}, {"export": {"float_layers": ["dense"]}}]})
    with pytest.raises(ValueError, match="strategy"):
        Recipe.from_dict({"steps": [{"prune": {}, "search": {"values": [0.5],
                                                             "strategy": "greedy"}}]})


def test_a_backoff_search_keeps_the_most_compressed_value_within_its_share(
        trained_cnn, small, tmp_path):
    values = [0.95, 0.9, 0.75, 0.5, 0.25]
    recipe = {"steps": [{"prune": {"granularity": "unstructured", "epochs": 1},
                         "search": {"values": values, "strategy": "backoff"}}]}
    result = compress(trained_cnn, small, recipe, tmp_path, runs=3, max_accuracy_drop=1.0)
    rows = result.steps[0].search
    assert len(rows) <= math.ceil(math.log2(len(values) + 1))  # bisection, not every value
    base = _base_val(tmp_path)
    for row in rows:  # the verdict is the step's share of the budget on the validation data
        assert row["within_budget"] == (100 * (base - row["val_accuracy"]) <= 1.0 + 1e-9)
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["within_budget"]
    # Nothing more compressed than the choice was within, nothing less compressed was tried
    # after it: the choice is the first value within in the list.
    within = [r["sparsity"] for r in rows if r["within_budget"]]
    assert chosen[0]["sparsity"] == max(within)
    assert all(not r["within_budget"] for r in rows if r["sparsity"] > chosen[0]["sparsity"])
    assert result.steps[0].skipped is None


def test_a_step_with_no_value_within_its_share_is_skipped_and_the_model_unchanged(
        trained_cnn, small, tmp_path):
    recipe = {"steps": [{"prune": {"granularity": "channel", "round_to": 8, "epochs": 1},
                         "search": {"values": [0.9, 0.8], "strategy": "backoff"}},
                        {"export": {"mode": "float32"}}]}
    result = compress(trained_cnn, small, recipe, tmp_path, runs=3, max_accuracy_drop=0.0)
    step = result.steps[0]
    assert step.skipped and "no value of sparsity keeps the model within" in step.skipped
    assert not any(r["within_budget"] for r in step.search)
    assert step.params == result.baseline.params  # passed through unchanged
    assert result.meets_budget  # the float32 export of the unchanged model
    assert "skipped: no value of sparsity" in (tmp_path / "report.md").read_text()


def test_qat_that_loses_gives_way_to_post_training_int8(trained_cnn, small, tmp_path,
                                                        monkeypatch):
    real = _steps.run

    def ruined_qat(step, model, *args, **kwargs):  # QAT whose fine-tuning went wrong
        outcome = real(step, model, *args, **kwargs)
        if step.kind == "qat":
            dense = [w for w in outcome.model.weights if len(w.shape) == 2][-1]
            dense.assign(np.zeros(dense.shape, dense.dtype))
        return outcome

    monkeypatch.setattr(_steps, "run", ruined_qat)
    recipe = {"steps": [{"qat": {"epochs": 1}}, {"export": {"mode": "int8"}}]}
    result = compress(trained_cnn, small, recipe, tmp_path, runs=3)
    qat = result.steps[0]
    assert qat.skipped and "post-training int8" in qat.skipped
    assert qat.info["post_training_worse_by"] < qat.info["file_worse_by"]
    assert result.meets_budget and result.final.accuracy > 0.9


def test_auto_chooses_from_the_model_and_the_data(trained_cnn, small):
    from tfcompress.pipeline._data import splits

    fit, _, _ = splits(small, None, 0, model=trained_cnn)
    plan = auto_recipe(trained_cnn, fit, 64)
    kinds = [s.kind for s in plan.steps]
    assert kinds[0] == "prune" and plan.steps[0].get("granularity") == "channel"
    assert kinds[-2:] == ["qat", "export"] and plan.steps[-1].get("float_layers") == "auto"
    assert all(s.search.strategy == "backoff" for s in plan.steps if s.search)
    assert f"{fit.train.size:,} training images" in plan.choices[0]
    # Fine-tuning length follows the data: about the same number of optimizer steps.
    few = Dataset(small.x_train[:128], small.y_train[:128], small.x_test, small.y_test)
    few_fit, _, _ = splits(few, None, 0, model=trained_cnn)
    epochs = [auto_recipe(trained_cnn, d, 8).steps[0].get("epochs") for d in (few_fit, fit)]
    assert epochs[0] > epochs[1] >= 2
    # A model without channels to remove or weights to spare gets only the integer file.
    tiny = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="softmax")])
    tiny_plan = auto_recipe(tiny, fit, 64)
    assert [s.kind for s in tiny_plan.steps] == ["qat", "export"]
    assert any("no channel pruning" in c for c in tiny_plan.choices)
    # The plan is a recipe like any other: it survives a report's round trip.
    assert Recipe.from_dict(plan.to_dict()) == plan


def test_fine_tuning_keeps_its_best_epoch_and_stops_when_it_stops_improving(trained_cnn,
                                                                           small):
    from tfcompress import _training

    model = _training.copy_model(trained_cnn)
    model.compile(keras.optimizers.SGD(20.0), "sparse_categorical_crossentropy")
    before = _training.evaluate(model, (small.x_test, small.y_test))
    best = _training.BestOnValidation((small.x_test, small.y_test), "top1", first_epoch=0,
                                      patience=2)
    _training.fit(model, (small.x_train[:256], small.y_train[:256]), epochs=10,
                  callbacks=[best])
    # The learning rate wrecks the model; the weights it started from are put back.
    assert best.best_epoch == 0 and len(best.scores) <= 3  # stopped after 2 worse epochs
    assert min(s for _, s in best.scores[1:]) < before - 0.3
    assert _training.evaluate(model, (small.x_test, small.y_test)) == before


def test_a_pruning_step_restores_only_epochs_at_its_final_sparsity(trained_cnn, small,
                                                                   tmp_path):
    recipe = {"steps": [{"prune": {"granularity": "unstructured", "sparsity": 0.6,
                                   "epochs": 5}}]}
    result = compress(trained_cnn, small, recipe, tmp_path, runs=3)
    tuning = result.steps[0].info["fine_tuning"]
    assert tuning["best_epoch"] >= 4 and tuning["epochs_scored"] >= 1  # after the ramp
    assert "reached sparsity 0.6" in result.steps[0].description


def test_the_learning_rate_falls_along_a_cosine_and_is_put_back(trained_cnn, small):
    from tfcompress import _training

    model = _training.copy_model(trained_cnn)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))))
    _training.fit(model, (small.x_train[:128], small.y_train[:128]), epochs=4,
                  callbacks=[_training.CosineEpochs(4), record])
    assert seen[0] == pytest.approx(1e-3) and seen[-1] == pytest.approx(5e-5)
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == \
        pytest.approx(1e-3)
