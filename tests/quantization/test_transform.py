import keras
import numpy as np
import pytest
from keras import ops

from tests.conftest import litert_predict
from tfcompress import pruning as P
from tfcompress import quantization as Q
from tfcompress.export import to_tflite


def _types(model):
    return [type(layer).__name__ for layer in model._flatten_layers(include_self=False)]


def test_conv_bn_relu_is_folded_and_fused(trained_cnn):
    q = Q.quantize_aware(trained_cnn)
    types = _types(q)
    assert "BatchNormalization" not in types and "ReLU" not in types
    assert types.count("QuantConv") == 3 and types.count("QuantDepthwiseConv2D") == 1
    assert types.count("QuantDense") == 2
    by_name = {layer.name: layer for layer in q.layers}
    assert by_name["conv1_quant"].activation == "relu"  # conv1 -> bn1 -> relu1, fused
    assert by_name["logits_quant"].activation == "linear"
    assert by_name["conv1_quant"].per_channel and not by_name["fc1_quant"].per_channel
    # The input is not modified and shares no layer with the copy.
    assert not {id(x) for x in trained_cnn.layers} & {id(x) for x in q.layers}


def test_folded_model_computes_what_the_float_model_computes(trained_cnn, mnist):
    q = Q.quantize_aware(trained_cnn)
    x = mnist.x_test[:200]
    float_pred = trained_cnn.predict(x, verbose=0).argmax(1)
    # Observers make activation quantizers pass values through: what remains is BN folding,
    # activation fusion and weight rounding, which must not change the predictions.
    for layer in q._flatten_layers(include_self=False):
        if isinstance(layer, Q.ActivationQuantizer):
            layer.observer = lambda v: None  # pass-through: isolates BN folding + weight quant
    try:
        q_pred = ops.convert_to_numpy(q(x, training=False)).argmax(1)
    finally:
        for layer in q._flatten_layers(include_self=False):
            if isinstance(layer, Q.ActivationQuantizer):
                layer.observer = None
    assert np.mean(q_pred == float_pred) >= 0.99


@pytest.fixture(scope="module")
def qat_model(trained_cnn, mnist):
    q, result = Q.train_quantized(trained_cnn, mnist, epochs=1)
    return q, result


def test_qat_int8_export_agrees_with_the_keras_model(qat_model, mnist, tmp_path):
    q, result = qat_model
    report = to_tflite(q, tmp_path / "qat.tflite", "int8")  # no calibration data
    assert report.integer_only and report.calibration_samples == 0
    lite = litert_predict(report.path, mnist.x_test)
    keras_pred = q.predict(mnist.x_test, verbose=0)
    assert np.mean(lite.argmax(1) == keras_pred.argmax(1)) >= 0.995
    lite_acc = np.mean(lite.argmax(1) == mnist.y_test)
    assert lite_acc >= result.accuracy_float - 0.01


def test_qat_model_saves_and_loads(qat_model, mnist, tmp_path):
    q, _ = qat_model
    path = tmp_path / "qat.keras"
    q.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(mnist.x_test[:50], verbose=0),
                               q.predict(mnist.x_test[:50], verbose=0), atol=1e-5)
    # A loaded QAT model exports like the original.
    assert to_tflite(path, tmp_path / "from_file.tflite", "int8").integer_only


def test_integer_io_export(qat_model, tmp_path):
    q, _ = qat_model
    report = to_tflite(q, tmp_path / "io.tflite", "int8", integer_io=True)
    assert report.inputs[0].dtype == "int8" and report.outputs[0].dtype == "int8"


def test_untrained_qat_model_is_refused(trained_cnn, tmp_path):
    q = Q.quantize_aware(trained_cnn)
    with pytest.raises(ValueError, match="has not learned activation ranges"):
        to_tflite(q, tmp_path / "x.tflite", "int8")
    assert not (tmp_path / "x.tflite").exists()


def test_pruned_model_keeps_its_zeros_through_qat_and_export(trained_cnn, mnist, tmp_path):
    pruned, _ = P.prune(trained_cnn, mnist, sparsity=0.8, epochs=1)
    q, _ = Q.train_quantized(pruned, mnist, epochs=1)
    for layer in q._flatten_layers(include_self=False):
        if isinstance(layer, (Q.QuantConv, Q.QuantDense)) and layer.keep_zeros:
            kernel = ops.convert_to_numpy(layer.kernel * layer.mask)
            assert np.mean(kernel == 0) >= 0.79
    report = to_tflite(q, tmp_path / "pq.tflite", "int8")
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=report.path)
    interp.allocate_tensors()
    zeros = total = 0
    for op in interp._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            w = interp.get_tensor(op["inputs"][1])
            assert w.dtype == np.int8
            zeros += int((w == 0).sum())
            total += w.size
    assert zeros / total >= 0.79
    # The masks are training bookkeeping: the count is what the .tflite holds, as unpruned.
    assert Q.count_params(q) == Q.count_params(Q.quantize_aware(trained_cnn))
    assert Q.count_params(q) == total + sum(
        layer.bias.shape[0] for layer in q._flatten_layers(include_self=False)
        if isinstance(layer, (Q.QuantConv, Q.QuantDense, Q.QuantDepthwiseConv2D)))


def test_mirrored_strategy(mnist, mirrored):
    strategy = mirrored
    assert strategy.num_replicas_in_sync == 2
    from tfcompress.reference import compile_for_classification, reference_cnn

    keras.utils.set_random_seed(0)
    with strategy.scope():
        q = compile_for_classification(Q.quantize_aware(reference_cnn()))
    q.fit(mnist.x_train[:2048], mnist.y_train[:2048], epochs=2, batch_size=64, verbose=0)
    ranges = [(float(ops.convert_to_numpy(layer.range_min)),
               float(ops.convert_to_numpy(layer.range_max)))
              for layer in q._flatten_layers(include_self=False)
              if isinstance(layer, Q.ActivationQuantizer)]
    assert all(hi > lo for lo, hi in ranges)
    acc = np.mean(q.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert acc > 0.6


def _tiny(block):
    inputs = keras.Input((16, 16, 3))
    outputs = block(inputs)
    return keras.Model(inputs, outputs)


COVERAGE = {
    "residual_add": lambda x: keras.layers.Add()([
        keras.layers.Conv2D(3, 3, padding="same", activation="relu")(x), x]),
    "squeeze_excite": lambda x: keras.layers.Multiply()([x, keras.layers.Conv2D(
        3, 1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D(keepdims=True)(x))]),
    "concat_upsample": lambda x: keras.layers.Concatenate()([
        keras.layers.UpSampling2D()(keras.layers.MaxPooling2D()(x)),
        keras.layers.ZeroPadding2D(1)(keras.layers.Conv2D(4, 3)(x))]),
    "separable_bn_relu6": lambda x: keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(
        keras.layers.SeparableConv2D(8, 3, padding="same")(x))),
    "hard_swish_tanh": lambda x: keras.layers.Activation("tanh")(keras.layers.Activation(
        "hard_swish")(keras.layers.Conv2D(4, 3)(x))),
    "rescaling_ops": lambda x: keras.layers.Conv2D(4, 3)((keras.layers.Rescaling(
        2.0, offset=-1.0)(x) + 3.0) * (1.0 / 6.0)),
    "conv1d_reshape": lambda x: keras.layers.Flatten()(keras.layers.Conv1D(4, 3)(
        keras.layers.Reshape((48, 16))(x))),
    # U-Net decoder: a transposed conv and a nearest up-sampling, each concatenated.
    "transpose_upsample_concat": lambda x: keras.layers.Concatenate()([
        keras.layers.UpSampling2D()(keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)),
        keras.layers.Conv2DTranspose(4, 2, strides=2)(keras.layers.MaxPooling2D()(x)), x]),
    # DenseNet transition: BN -> ReLU -> 1x1 conv -> average pooling, then concatenated
    # (the converter needs the pooling's output on its input's scale).
    "densenet_transition": lambda x: keras.layers.Concatenate()([
        keras.layers.AveragePooling2D(2)(keras.layers.Conv2D(4, 1)(keras.layers.ReLU()(
            keras.layers.BatchNormalization()(x)))), keras.layers.MaxPooling2D()(x)]),
    # EfficientNet's Normalization stem, and a BatchNormalization after an Add (NASNet).
    "normalization_and_lone_bn": lambda x: keras.layers.BatchNormalization()(
        keras.layers.Add()([keras.layers.Conv2D(3, 3, padding="same")(
            keras.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.09, 0.01])(x)),
            x])),
    "dense_softmax_pool": lambda x: keras.layers.Softmax()(keras.layers.Dense(5)(
        keras.layers.GlobalAveragePooling2D()(keras.layers.AveragePooling2D(2)(x)))),
}


@pytest.mark.parametrize("name", sorted(COVERAGE))
def test_layer_coverage_exports_integer_only(name, tmp_path):
    model = _tiny(COVERAGE[name])
    q = Q.quantize_aware(model)
    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    for _ in range(25):
        q(x, training=True)
    report = to_tflite(q, tmp_path / f"{name}.tflite", "int8")
    assert report.integer_only, report.float_ops
    lite = litert_predict(report.path, x[:16]).reshape(16, -1)
    keras_out = ops.convert_to_numpy(q(x[:16], training=False)).reshape(16, -1)
    scale = np.abs(keras_out).max() + 1e-6
    assert np.abs(lite - keras_out).max() / scale < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["MobileNetV2", "MobileNetV3Small"])
def test_keras_applications_backbones(arch, tmp_path):
    from tfcompress.data import load

    ds = load("shapes", image_size=96, num_samples=240)
    inputs = keras.Input((96, 96, 3))
    if arch == "MobileNetV2":
        backbone = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                                  weights=None, include_top=False)
        x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
    else:
        backbone = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None,
                                                       include_top=False)
        x = keras.layers.Rescaling(255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    model = keras.Model(inputs, keras.layers.Dense(ds.num_classes)(x))
    q, _ = Q.train_quantized(model, ds, epochs=1, batch_size=32)
    report = to_tflite(q, tmp_path / f"{arch}.tflite", "int8")
    assert report.integer_only and report.float_ops == ()
    lite = litert_predict(report.path, ds.x_test[:24])
    assert np.mean(lite.argmax(1) == q.predict(ds.x_test[:24], verbose=0).argmax(1)) >= 0.95


def test_float_layers_option_and_an_unknown_layer_kept_float(tmp_path):
    class Custom(keras.layers.Layer):
        def call(self, x):
            return ops.square(x)

    inputs = keras.Input((8, 8, 3))
    h = Custom(name="sq")(keras.layers.Conv2D(4, 3)(inputs))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    with pytest.warns(UserWarning, match=r"keeps layer 'sq' \(Custom\) in float.*register_"):
        auto = Q.quantize_aware(model)
    assert Q.float_layer_names(auto) == ["sq"]
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
    for _ in range(25):
        auto(x, training=True)
    with pytest.raises(ValueError, match="keeps sq in float.*representative_data"):
        to_tflite(auto, tmp_path / "auto.tflite", "int8")
    report = to_tflite(auto, tmp_path / "auto.tflite", "int8", representative_data=x)
    assert not report.integer_only and {o.layer for o in report.float_ops} == {"sq"}
    q = Q.quantize_aware(model, float_layers=["sq"])
    assert "Custom" in _types(q)
    Q.register_layer(Custom, "quantize_output")
    try:
        assert "Custom" in _types(Q.quantize_aware(model))
    finally:
        from tfcompress.quantization._transform import _registry

        _registry.pop(Custom)


def test_subclassed_model_is_a_type_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4)))
    with pytest.raises(TypeError, match="functional API"):
        Q.quantize_aware(net)


def test_per_tensor_weights_and_16_bit_activations(trained_cnn, mnist, tmp_path):
    q = Q.quantize_aware(trained_cnn, per_channel_weights=False, activation_bits=16)
    convs = [layer for layer in q.layers if isinstance(layer, Q.QuantConv)]
    assert convs and not any(c.per_channel for c in convs)
    assert all(c.output_quantizer.num_bits == 16 for c in convs)
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(mnist.x_train[:512], mnist.y_train[:512], epochs=2, verbose=0)
    acc = np.mean(q.predict(mnist.x_test, verbose=0).argmax(1) == mnist.y_test)
    assert acc > 0.9  # 16-bit simulation barely changes the float model
    with pytest.raises(ValueError, match="8 or 16"):
        Q.quantize_aware(trained_cnn, activation_bits=4)


def test_converter_rules_normalization_bn_and_pooling_keep_no_float_compute(tmp_path):
    """Normalization and a lone BatchNormalization become int8 MUL/ADD; average pooling and
    up-sampling add no quantization point (TFLite keeps their input's scale); nearest
    up-sampling is one RESIZE_NEAREST_NEIGHBOR (no TILE, which LiteRT's reference kernels and
    TFLite Micro lack in int8)."""
    from tfcompress import _tflite

    model = _tiny(lambda x: keras.layers.UpSampling2D()(keras.layers.AveragePooling2D(2)(
        COVERAGE["normalization_and_lone_bn"](x))))
    q = Q.quantize_aware(model)
    types = _types(q)
    assert "Normalization" not in types and "BatchNormalization" not in types
    quantizers = [layer.name for layer in q.layers if isinstance(layer, Q.ActivationQuantizer)]
    assert not any("pooling" in n or "up_sampling" in n for n in quantizers), quantizers
    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    for _ in range(25):
        q(x, training=True)
    report = to_tflite(q, tmp_path / "rules.tflite", "int8", verify_data=x,
                       target="litert-reference")
    summary = _tflite.summarize(_tflite.interpreter(report.path))
    ops_in_file = summary.op_counts()
    assert report.integer_only, report.float_ops
    assert "TILE" not in ops_in_file and ops_in_file.get("RESIZE_NEAREST_NEIGHBOR") == 1
    assert {"MUL", "ADD"} <= set(ops_in_file)


def test_macs_of_a_quantize_aware_model_equal_the_float_model(trained_cnn):
    from tfcompress._macs import model_macs

    unet_like = _tiny(COVERAGE["transpose_upsample_concat"])
    for model in (trained_cnn, unet_like):
        assert model_macs(Q.quantize_aware(model)) == model_macs(model) > 0


def test_layer_specs_are_checked_the_same_way_everywhere(trained_cnn):
    from tfcompress.lowrank import factorize

    with pytest.raises(TypeError, match=r"float_layers= takes layer classes.*got 3 \(int\)"):
        Q.quantize_aware(trained_cnn, float_layers=[3])
    with pytest.raises(TypeError, match=r"layers= takes layer classes.*got 3 \(int\)"):
        factorize(trained_cnn, 0.5, layers=[3])
    with pytest.raises(ValueError, match=r"float_layers=\['nope'\] matches no layer.*conv1"):
        Q.quantize_aware(trained_cnn, float_layers=["nope"])
    with pytest.raises(ValueError, match=r"exclude=\['fc9\*'\] matches no layer"):
        factorize(trained_cnn, 0.5, exclude="fc9*")


def test_a_conv_with_one_group_per_channel_is_a_depthwise_conv_and_others_stay_float():
    from tfcompress import _graph

    inputs = keras.Input((8, 8, 6))
    h = keras.layers.Conv2D(12, 3, groups=6, padding="same", name="gdw")(inputs)  # ConvNeXt's
    h = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inputs, keras.layers.Conv2D(6, 1, groups=3, name="g3")(h))
    model.get_layer("bn").set_weights([np.linspace(0.5, 1.5, 12)] * 2 + [
        np.linspace(-1, 1, 12), np.linspace(0.5, 2, 12)])
    with pytest.warns(UserWarning, match=r"keeps layer 'g3' \(Conv2D\) in float: a "
                                         r"convolution in 3 groups"):
        q = Q.quantize_aware(model)
    assert isinstance(q.get_layer("gdw_quant"), Q.QuantDepthwiseConv2D)
    assert Q.float_layer_names(q) == ["g3"]
    for layer in _graph.all_layers(q):
        if hasattr(layer, "simulate"):
            layer.simulate = False
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 6)).astype(np.float32)
    np.testing.assert_allclose(q.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
