"""int4 weights: fake-quant on 15 levels in training, packed INT4 kernels in the file, run by
LiteRT and TFLite Micro; per-layer widths; one line for what a target cannot run."""

import keras
import numpy as np
import pytest

from tests.conftest import litert_predict
from tfcompress import quantization as Q
from tfcompress.cli import main
from tfcompress.export import to_tflite
from tfcompress.quantization._transform import weight_bits


def test_int4_qat_runs_in_tflm_in_far_fewer_bytes(trained_cnn, mnist, tmp_path):
    q4, result = Q.train_quantized(trained_cnn, mnist, epochs=1, weight_bits=4)
    assert set(weight_bits(q4).values()) == {4}
    kernel = keras.ops.convert_to_numpy(
        q4.get_layer("conv4_quant")._quant_weights(q4.get_layer("conv4_quant").kernel, -1))
    assert all(len(np.unique(kernel[..., c])) <= 15 for c in range(kernel.shape[-1]))

    four = to_tflite(q4, tmp_path / "w4.tflite", "int8", target="tflm", verify_data=mnist)
    eight = to_tflite(Q.calibrate_ranges(trained_cnn, mnist, num_samples=100),
                      tmp_path / "w8.tflite", "int8", target="tflm")
    assert four.weight_bits == {4: 6} and 4 not in eight.weight_bits
    assert eight.size_bytes / four.size_bytes >= 1.7
    assert four.agreement >= 0.98  # the packed file in TFLite Micro computes what Keras does
    accuracy = np.mean(litert_predict(four.path, mnist.x_test).argmax(1) == mnist.y_test)
    assert accuracy >= result.accuracy_float - 0.03


def test_post_training_int4_per_layer_and_per_tensor(trained_cnn, mnist, tmp_path):
    q = Q.calibrate_ranges(trained_cnn, mnist, num_samples=100, per_channel_weights=False,
                           weight_bits={"fc1": 4, "conv*": 4})
    assert weight_bits(q) == {"conv1_quant": 4, "dw2_quant": 8, "pw2_quant": 8,
                              "conv4_quant": 4, "fc1_quant": 4, "logits_quant": 8}
    # LiteRT's reference kernels run int4 CONV_2D and FULLY_CONNECTED (not DEPTHWISE_CONV_2D)
    report = to_tflite(q, tmp_path / "mixed.tflite", "int8", target="litert-reference",
                       verify_data=mnist)
    assert report.weight_bits == {4: 3, 8: 3}
    assert report.agreement >= 0.97
    from tfcompress.bench import inspect_model

    assert inspect_model(report.path)["weight_bits"] == {"4": 3, "8": 3}


def test_bad_widths_and_targets_get_one_line_naming_the_layer(trained_cnn):
    with pytest.raises(ValueError, match=r"weight_bits must be 4 or 8, got 3"):
        Q.quantize_aware(trained_cnn, weight_bits=3)
    with pytest.raises(ValueError, match=r"weight_bits\['fc1'\] must be 4 or 8, got 2"):
        Q.quantize_aware(trained_cnn, weight_bits={"fc1": 2})
    with pytest.raises(ValueError, match="names 'fc9', which matches no convolution or Dense "
                                         "layer.*conv1, dw2, pw2, conv4, fc1, logits"):
        Q.quantize_aware(trained_cnn, weight_bits={"fc9": 4})
    with pytest.raises(ValueError, match="8-bit activations only"):
        Q.quantize_aware(trained_cnn, weight_bits=4, activation_bits=16)
    with pytest.raises(ValueError, match="'fc1'.*kept in float.*cannot have 4-bit weights"):
        Q.quantize_aware(trained_cnn, weight_bits={"fc1": 4}, float_layers=["fc1"])
    with pytest.raises(ValueError, match="'dw2_quant'.*reference kernels.*weight_bits="
                                         r"\{'dw2': 8"):
        Q.quantize_aware(trained_cnn, weight_bits=4, target="litert-reference")
    with pytest.raises(ValueError, match="'conv1_quant' has 4-bit weights, which Vela does "
                                         "not compile"):
        Q.quantize_aware(trained_cnn, weight_bits=4, target="ethos-u55-128")
    x = keras.Input((8, 8, 4))
    up = keras.Model(x, keras.layers.Conv2DTranspose(4, 3, name="up")(x))
    with pytest.warns(UserWarning, match="keeps 8-bit weights in 'up'"):
        assert weight_bits(Q.quantize_aware(up, weight_bits=4)) == {"up_quant": 8}
    with pytest.raises(ValueError, match="'up'.*TRANSPOSE_CONV has no int4 kernel"):
        Q.quantize_aware(up, weight_bits={"up": 4})


def test_cli_weight_bits(trained_cnn_path, runner, tmp_path):
    out = tmp_path / "w4.tflite"
    result = runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(out), "--data",
                                  "mnist", "--weight-bits", "4,dw2=8", "--calibration-samples",
                                  "50", "--target", "litert-reference", "--json"])
    assert result.exit_code == 0, result.output
    assert '"4": 5' in result.output and out.exists()
    bad = tmp_path / "bad.tflite"
    for args, message in [(["--weight-bits", "5"], "expected 4, 8 or PATTERN=4/8"),
                          (["--weight-bits", "4"], "reference kernels run DEPTHWISE_CONV_2D"),
                          (["--weight-bits", "4", "--quantize", "float16"],
                           "goes with --quantize int8")]:
        result = runner.invoke(main, ["export", str(trained_cnn_path), "-o", str(bad),
                                      "--data", "mnist", "--target", "litert-reference", *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and not bad.exists()


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()



def test_int4_scan_picks_layers_within_the_budget(trained_cnn, mnist):
    from tfcompress.debug import sensitivity

    scan = sensitivity(trained_cnn, mnist, "int4", num_samples=200)
    assert [s.layer for s in scan.layers] == ["conv1", "dw2", "pw2", "conv4", "fc1", "logits"]
    assert 0.5 < scan.baseline <= 1.0 and scan.all_changed is not None  # all int8; all int4
    for budget in (0.0, 0.01, 0.05):
        chosen = scan.int4_layers(budget)
        assert sum(max(s.drop, 0.0) for s in scan.layers if s.layer in chosen) <= budget
        assert all(bits == 4 for bits in chosen.values())
    # every layer that loses nothing alone is taken even with no budget
    assert set(scan.int4_layers(0.0)) == {s.layer for s in scan.layers if s.drop <= 0}
    q = Q.quantize_aware(trained_cnn, weight_bits=scan.int4_layers(0.01))
    assert {n.removesuffix("_quant") for n, b in weight_bits(q).items() if b == 4} == set(
        scan.int4_layers(0.01))
    with pytest.raises(ValueError, match="from an 'int4' scan"):
        sensitivity(trained_cnn, mnist, "prune", num_samples=50).int4_layers()
