import json

import pytest

from tfcompress.pipeline import BUILTIN, Recipe, load_recipe


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_recipes_load_and_round_trip(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.steps[-1].kind == "export"
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_yaml_and_json_files(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "steps:\n  - prune: {granularity: channel, sparsity: 0.4}\n"
        "    search: {values: [0.3, 0.4], objective: latency}\n  - qat: {epochs: 2}\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.name == "r" and [s.kind for s in recipe.steps] == ["prune", "qat"]
    assert recipe.steps[0].get("sparsity") == 0.4 and recipe.steps[0].get("epochs") == 3
    assert recipe.steps[0].search.values == (0.3, 0.4)
    (tmp_path / "r.json").write_text(json.dumps(recipe.to_dict()))
    assert load_recipe(tmp_path / "r.json").steps == recipe.steps


@pytest.mark.parametrize("config, match", [
    ({"steps": [{"squeeze": {}}]}, "Unknown step 'squeeze'"),
    ({"steps": [{"prune": {"sparsty": 0.5}}]}, "no setting 'sparsty'"),
    ({"steps": [{"qat": {}}, {"prune": {}}]}, "Only export may follow qat"),
    ({"steps": [{"export": {}}, {"prune": {}}]}, "export must be the last"),
    ({"steps": [{"qat": {}, "search": {"values": [1]}}]}, "cannot be searched"),
    ({"steps": [{"prune": {}, "search": {"values": [0.5], "objective": "fun"}}]}, "objective"),
    ({"steps": [{"export": {"mode": "int4"}}]}, "setting .mode.: expected one of"),
    ({"steps": []}, "at least one step"),
    ({"stepz": []}, "'steps' list"),
])
def test_invalid_recipes_are_explained(config, match):
    with pytest.raises(ValueError, match=match):
        load_recipe(config)


def test_unknown_name_or_file():
    with pytest.raises(ValueError, match="neither a built-in name"):
        load_recipe("fastest")


def test_model_card_recipes_are_valid():
    from pathlib import Path

    models = Path(__file__).resolve().parents[2] / "models"
    cnn = load_recipe(models / "mnist_cnn" / "recipe.yaml")
    assert cnn.steps == load_recipe("default").steps  # the card shows the default recipe
    assert load_recipe(models / "mobilenetv2_shapes" / "recipe.yaml").steps[-1].kind == "export"
