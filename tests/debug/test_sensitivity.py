import json

import keras
import pytest

import tfcompress as tfc
from tfcompress import pruning as P
from tfcompress.debug import SensitivityScan, sensitivity


def test_prune_scan_ranks_the_first_conv_above_the_big_dense(trained_cnn, mnist, tmp_path):
    cache = tmp_path / "scan.json"
    scan = sensitivity(trained_cnn, mnist, "prune", num_samples=300, cache=cache)
    by = {s.layer: s for s in scan.layers}
    assert set(by) == {"conv1", "dw2", "pw2", "conv4", "fc1", "logits"}
    assert by["fc1"].weights == 576 * 128
    assert by["conv1"].drop > by["fc1"].drop + 0.02
    # The weights are put back after the scan.
    assert trained_cnn.evaluate(mnist.x_test[:300], mnist.y_test[:300], verbose=0)[1] == \
        pytest.approx(scan.baseline, abs=1e-6)
    sparsities = scan.sparsities(0.8)
    sizes = {s.layer: s.weights for s in scan.layers}
    overall = sum(sparsities[k] * sizes[k] for k in sizes) / sum(sizes.values())
    assert overall == pytest.approx(0.8, abs=0.005)
    assert sparsities["fc1"] > 0.8 > sparsities["conv1"]
    # The cache: same model, technique, amount and samples give the saved scan back.
    saved = json.loads(cache.read_text())
    saved["baseline"] = 0.123
    cache.write_text(json.dumps(saved))
    assert sensitivity(trained_cnn, mnist, "prune", num_samples=300, cache=cache).baseline \
        == 0.123
    assert SensitivityScan.load(cache).technique == "prune"


def test_per_layer_sparsities_are_reached(mnist):
    keras.utils.set_random_seed(0)
    model = tfc.reference.compile_for_classification(tfc.reference.reference_cnn())
    wanted = {"conv4": 0.6, "fc1": 0.9, "logits": 0.3}
    model.fit(mnist.x_train[:1000], mnist.y_train[:1000], epochs=1, batch_size=64, verbose=0,
              callbacks=[P.Pruning(P.ConstantSparsity(0.8, frequency=4),
                                   layer_sparsity=wanted)])
    got = {w.layer: w.sparsity for w in P.sparsity_report(model).weights}
    for name, value in wanted.items():
        assert got[name] == pytest.approx(value, abs=0.01), name
    assert got["conv1"] == got["pw2"] == got["dw2"] == 0.0
    with pytest.raises(ValueError, match="scope='layer'"):
        P.Pruning(P.ConstantSparsity(0.8), scope="global", layer_sparsity=wanted)
    with pytest.raises(ValueError, match=r"names \['fc9'\], which the model has no"):
        model.fit(mnist.x_train[:64], mnist.y_train[:64], epochs=1, verbose=0, callbacks=[
            P.Pruning(P.ConstantSparsity(0.8), layer_sparsity={"fc1": 0.5, "fc9": 0.5})])


def test_channel_scan_and_ratios(trained_cnn, mnist):
    scan = sensitivity(trained_cnn, mnist, "channels", 0.5, num_samples=200)
    assert {s.layer for s in scan.layers} >= {"conv1", "fc1"}
    ratios = scan.sparsities(0.5)
    assert all(0.0 <= v <= 0.95 for v in ratios.values())


def test_quantize_scan_names_a_layer_with_a_bad_range(trained_cnn, mnist):
    from tests.export.test_selective import _with_bad_fc1

    model = _with_bad_fc1(trained_cnn)
    scan = sensitivity(model, mnist, "quantize", num_samples=300)
    assert scan.ranked()[0].layer == "fc1"
    assert scan.ranked()[0].drop > 0.05
    assert scan.baseline - scan.all_changed > 0.05
    with pytest.raises(ValueError, match="'prune' or 'channels' scan"):
        scan.sparsities(0.5)
