"""Reference models used by the demo, the model cards and the tests."""

import keras
import numpy as np


def reference_cnn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    width: float = 1,
    name: str = "reference_cnn",
) -> keras.Model:
    """Builds the reference CNN: conv, BatchNorm, a depthwise-separable block, two dense layers.

    Small enough to train on 2 CPU cores in a minute, and it has every layer kind the exporter
    must fuse (Conv2D + BatchNorm + ReLU, DepthwiseConv2D, pooling, Dense). It outputs logits.

    Args:
        input_shape: Shape of one image, `(H, W, C)`. Defaults to `(28, 28, 1)`.
        num_classes: Number of classes. Defaults to `10`.
        width: Multiplier on every layer's channel count (16 channels in the first conv at
            `1`); `0.5` gives a student a quarter the size. Defaults to `1`.
        name: Model name. Defaults to `"reference_cnn"`.

    Returns:
        An uncompiled functional `keras.Model`.

    Examples:
        >>> model = reference_cnn()
        >>> model.output_shape
        (None, 10)
    """
    if not width > 0:
        raise ValueError(f"width must be a number > 0, got {width}.")
    c = max(1, round(16 * width))
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Conv2D(2 * c, 1, use_bias=False, name="pw2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn3")(x)
    x = keras.layers.ReLU(name="relu3")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Conv2D(4 * c, 3, padding="same", activation="relu", name="conv4")(x)
    x = keras.layers.MaxPooling2D(name="pool3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(8 * c, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_for_classification(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles `model` with Adam, sparse categorical cross-entropy on logits, and accuracy.

    Args:
        model: A model that outputs logits.
        learning_rate: Adam's learning rate. Defaults to `1e-3`.

    Returns:
        The same model, compiled.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def reference_mobilenet_v2(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    num_classes: int = 6,
    alpha: float = 0.35,
    name: str = "mobilenet_v2",
) -> keras.Model:
    """Builds `keras.applications.MobileNetV2` (untrained, no download) with a logits head.

    The backbone stays a nested model, as users build it; residual blocks, depthwise convs and
    ReLU6 make it the reference for channel pruning and QAT on `shapes`. Its BatchNormalization
    momentum is set to 0.9 (Keras uses 0.999): with a few thousand training images the moving
    statistics would otherwise not converge and test accuracy would lag far behind training.

    Args:
        input_shape: Shape of one image, `(H, W, 3)`. Defaults to `(96, 96, 3)`.
        num_classes: Number of classes. Defaults to `6` (the `shapes` set).
        alpha: Width multiplier of MobileNetV2. Defaults to `0.35`.
        name: Model name. Defaults to `"mobilenet_v2"`.

    Returns:
        An uncompiled functional `keras.Model` that outputs logits.

    Examples:
        >>> reference_mobilenet_v2().output_shape
        (None, 6)
    """
    backbone = keras.applications.MobileNetV2(input_shape=input_shape, alpha=alpha,
                                              include_top=False, weights=None)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    inputs = keras.Input(shape=input_shape, name="image")
    x = backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def reference_resnet8(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "resnet8",
) -> keras.Model:
    """Builds ResNet-8 as MLPerf Tiny's image-classification benchmark defines it (Keras 3).

    A 16-filter stem and three residual stacks of 16, 32 and 64 filters (the last two halve
    the resolution, with a 1x1 convolution on the shortcut), average pooling and a dense head;
    it outputs logits. About 78,000 parameters at 32 x 32 x 3.

    Args:
        input_shape: Shape of one image. Defaults to `(32, 32, 3)` (CIFAR-10's).
        num_classes: Number of classes. Defaults to `10`.
        name: Model name. Defaults to `"resnet8"`.

    Returns:
        An uncompiled functional `keras.Model`.

    Examples:
        >>> reference_resnet8().output_shape
        (None, 10)
    """
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"s{i}_conv1")(x)
        y = layers.BatchNormalization(name=f"s{i}_bn1")(y)
        y = layers.ReLU(name=f"s{i}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", name=f"s{i}_conv2")(y)
        y = layers.BatchNormalization(name=f"s{i}_bn2")(y)
        if stride != 1:
            x = layers.Conv2D(filters, 1, strides=stride, name=f"s{i}_shortcut")(x)
        x = layers.ReLU(name=f"s{i}_relu2")(layers.Add(name=f"s{i}_add")([x, y]))
    x = layers.AveragePooling2D(pool_size=x.shape[1:3], name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def reference_ds_cnn(
    input_shape: tuple[int, int, int] = (49, 10, 1),
    num_classes: int = 12,
    name: str = "ds_cnn",
) -> keras.Model:
    """Builds DS-CNN as MLPerf Tiny's keyword-spotting benchmark defines it (Keras 3).

    Input: 49 frames of 10 MFCC features. A 64-filter 10 x 4 convolution with stride 2, four
    depthwise-separable blocks of 64 channels, average pooling and a dense head; it outputs
    logits. About 24,000 parameters.

    Args:
        input_shape: Shape of one spectrogram, `(frames, features, 1)`. Defaults to
            `(49, 10, 1)`.
        num_classes: Number of keywords. Defaults to `12`.
        name: Model name. Defaults to `"ds_cnn"`.

    Returns:
        An uncompiled functional `keras.Model`.

    Examples:
        >>> reference_ds_cnn().output_shape
        (None, 12)
    """
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="features")
    x = layers.Conv2D(64, (10, 4), strides=2, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Dropout(0.2, name="drop1")(x)
    for i in range(1, 5):
        x = layers.DepthwiseConv2D(3, padding="same", name=f"dw{i}")(x)
        x = layers.BatchNormalization(name=f"dw{i}_bn")(x)
        x = layers.ReLU(name=f"dw{i}_relu")(x)
        x = layers.Conv2D(64, 1, name=f"pw{i}")(x)
        x = layers.BatchNormalization(name=f"pw{i}_bn")(x)
        x = layers.ReLU(name=f"pw{i}_relu")(x)
    x = layers.Dropout(0.4, name="drop2")(x)
    x = layers.AveragePooling2D(pool_size=x.shape[1:3], name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def reference_unet(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 4,
    width: int = 8,
    name: str = "unet",
) -> keras.Model:
    """Builds a small U-Net for per-pixel classification (segmentation).

    Two strided-conv downsampling stages, then one `Conv2DTranspose` and one `UpSampling2D`
    stage, each concatenated with the encoder's tensor of the same size (skip connections);
    it outputs per-pixel logits.

    Args:
        input_shape: Shape of one image. Defaults to `(32, 32, 3)`.
        num_classes: Classes per pixel. Defaults to `4`.
        width: Filters of the first stage (the second has twice as many). Defaults to `8`.
        name: Model name. Defaults to `"unet"`.

    Returns:
        An uncompiled functional `keras.Model`.

    Examples:
        >>> reference_unet().output_shape
        (None, 32, 32, 4)
    """
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    e1 = layers.Conv2D(width, 3, padding="same", activation="relu", name="enc1")(inputs)
    e2 = layers.Conv2D(2 * width, 3, strides=2, padding="same", name="enc2")(e1)
    e2 = layers.ReLU(name="enc2_relu")(layers.BatchNormalization(name="enc2_bn")(e2))
    b = layers.Conv2D(4 * width, 3, strides=2, padding="same", activation="relu",
                      name="bottleneck")(e2)
    d2 = layers.Conv2DTranspose(2 * width, 2, strides=2, name="up2")(b)
    d2 = layers.Concatenate(name="skip2")([d2, e2])
    d2 = layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="dec2")(d2)
    d1 = layers.UpSampling2D(2, name="up1")(d2)
    d1 = layers.Concatenate(name="skip1")([d1, e1])
    d1 = layers.Conv2D(width, 3, padding="same", activation="relu", name="dec1")(d1)
    outputs = layers.Conv2D(num_classes, 1, name="logits")(d1)
    return keras.Model(inputs, outputs, name=name)


def reference_audio_conv1d(
    input_shape: tuple[int, int] = (128, 16),
    num_classes: int = 8,
    name: str = "audio_conv1d",
) -> keras.Model:
    """Builds a small 1-D convolutional audio classifier (frames x features in, logits out).

    Three `Conv1D` blocks with BatchNormalization and ReLU, max pooling between them, global
    average pooling and a dense head.

    Args:
        input_shape: `(frames, features)`. Defaults to `(128, 16)`.
        num_classes: Number of classes. Defaults to `8`.
        name: Model name. Defaults to `"audio_conv1d"`.

    Returns:
        An uncompiled functional `keras.Model`.

    Examples:
        >>> reference_audio_conv1d().output_shape
        (None, 8)
    """
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="frames")
    x = inputs
    for i, filters in enumerate((32, 48, 64), start=1):
        x = layers.Conv1D(filters, 5, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i < 3:
            x = layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _inverted_residual(x, filters: int, stride: int, expansion: int, name: str):
    """A MobileNetV2 block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection (+ skip)."""
    layers = keras.layers
    inputs = x
    if expansion != 1:
        x = layers.Conv2D(x.shape[-1] * expansion, 1, use_bias=False, name=f"{name}_expand")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_project_bn")(x)
    if stride == 1 and inputs.shape[-1] == filters:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def reference_detector(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    num_classes: int = 6,
    alpha: float = 1.0,
    scales: tuple[tuple[float, ...], ...] = ((0.12, 0.17), (0.24, 0.34), (0.48, 0.66)),
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5),
    name: str = "detector",
    head: str = "ssd",
) -> keras.Model:
    """Builds a small SSD-lite object detector: a MobileNetV2-style backbone and depthwise-
    separable heads on its feature maps at strides 8, 16 and 32.

    With `head="anchor_free"` the heads predict one box per cell instead (as YOLO-style and
    FCOS heads do): each cell's prior is a square two cells wide that only sets the scale of
    its box offsets, and the training loss assigns objects to cells by centre and size
    (`Anchors(matching="centre")`), so no anchor shapes are tuned and the file decodes and
    suppresses 6 times fewer boxes.

    The output is `(batch, A, 4 + num_classes)`, the contract of every tfcompress detector
    (`tfcompress.detection`): per anchor, box offsets `[ty, tx, th, tw]` then class logits
    (sigmoid scores, no background column). The last layer, `Anchors`, carries the `A`
    anchors: at every cell of each map, one per scale of that map and aspect ratio. Train it
    with `compile_for_detection` on targets `(batch, B, 5)`, e.g. `load("shapes-detect")`.

    Args:
        input_shape: Shape of one image, `(H, W, C)`, H and W multiples of 32 for square
            cells. Defaults to `(96, 96, 3)`.
        num_classes: Object classes. Defaults to `6` (the `shapes` classes).
        alpha: Width multiplier of the backbone and heads. Defaults to `1.0`.
        scales: Anchor sizes per feature map (stride 8, 16, 32), as a share of the image's
            side. Defaults to `((0.12, 0.17), (0.24, 0.34), (0.48, 0.66))`.
        aspect_ratios: Width over height of the anchors. Defaults to `(1.0, 2.0, 0.5)`.
        name: Model name. Defaults to `"detector"`.
        head: `"ssd"` (anchor boxes from `scales` and `aspect_ratios`) or `"anchor_free"`
            (one point per cell; `scales` and `aspect_ratios` unused). Defaults to `"ssd"`.

    Returns:
        An uncompiled functional `keras.Model`.

    Examples:
        >>> model = reference_detector()
        >>> model.output_shape  # 6 anchors at 12x12, 6x6 and 3x3 cells; 4 offsets, 6 classes
        (None, 1134, 10)
    """
    from tfcompress.detection import Anchors

    if head not in ("ssd", "anchor_free"):
        raise ValueError(f"head must be 'ssd' or 'anchor_free', got {head!r}.")
    if len(scales) != 3:
        raise ValueError(f"scales must give the anchor sizes of 3 feature maps, got {scales}.")
    layers = keras.layers

    def width(c: int) -> int:
        return max(8, int(round(c * alpha / 8)) * 8)

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(width(16), 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    x = _inverted_residual(x, width(16), 1, 1, "block1")
    x = _inverted_residual(x, width(24), 2, 4, "block2")
    x = _inverted_residual(x, width(24), 1, 4, "block3")
    x = _inverted_residual(x, width(32), 2, 4, "block4")
    f8 = _inverted_residual(x, width(32), 1, 4, "block5")
    x = _inverted_residual(f8, width(64), 2, 4, "block6")
    f16 = _inverted_residual(x, width(64), 1, 4, "block7")
    f32 = _inverted_residual(f16, width(96), 2, 4, "block8")
    per_cell = 1 if head == "anchor_free" else len(scales[0]) * len(aspect_ratios)
    if head == "ssd" and any(len(s) * len(aspect_ratios) != per_cell for s in scales):
        raise ValueError("Give every feature map the same number of scales.")
    heads, sizes = [], []
    for i, f in enumerate((f8, f16, f32)):
        sizes.append((int(f.shape[1]), int(f.shape[2])))
        h = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"head{i}_dw")(f)
        h = layers.BatchNormalization(momentum=0.9, name=f"head{i}_dw_bn")(h)
        h = layers.ReLU(6.0, name=f"head{i}_dw_relu")(h)
        h = layers.Conv2D(per_cell * (4 + num_classes), 1, name=f"head{i}")(h)
        heads.append(layers.Reshape((-1, 4 + num_classes), name=f"head{i}_flat")(h))
    out = layers.Concatenate(axis=1, name="predictions")(heads)
    if head == "anchor_free":  # one square prior per cell, two cells wide
        out = Anchors(feature_sizes=sizes, scales=[[2.0 / max(hw)] for hw in sizes],
                      aspect_ratios=(1.0,), matching="centre", name="anchors")(out)
    else:
        out = Anchors(feature_sizes=sizes, scales=[list(s) for s in scales],
                      aspect_ratios=aspect_ratios, name="anchors")(out)
    model = keras.Model(inputs, out, name=name)
    prior = float(np.log(0.01 / 0.99))  # class scores start near 1 %: focal loss's start
    for i in range(3):
        head = model.get_layer(f"head{i}")
        bias = np.zeros(head.bias.shape, np.float32).reshape(per_cell, 4 + num_classes)
        bias[:, 4:] = prior
        head.bias.assign(bias.reshape(-1))
    return model


def compile_for_detection(model: keras.Model, learning_rate: float = 2e-3,
                          anchors: "np.ndarray | None" = None) -> keras.Model:
    """Compiles a detector with Adam and `tfcompress.detection.DetectionLoss` on its anchors
    (its `Anchors` layer's, or `anchors`); returns it.

    Examples:
        >>> compile_for_detection(reference_detector()).loss.name
        'detection_loss'
    """
    from tfcompress.detection import DetectionLoss, check_detector, matching_of

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=DetectionLoss(check_detector(model, anchors),
                                     matching="iou" if anchors is not None else matching_of(model)))
    return model
