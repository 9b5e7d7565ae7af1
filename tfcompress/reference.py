"""Reference models used by the demo, the model cards and the tests."""

import keras


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


def reference_detector(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    num_classes: int = 4,
    anchors: int = 3,
    alpha: float = 0.25,
    name: str = "detector",
) -> keras.Model:
    """Builds a small SSD-style object detector on a MobileNet backbone, with two outputs.

    The backbone (`keras.applications.MobileNet`, nested as one model with two outputs) gives
    feature maps at strides 16 and 32; on each, a 3x3 convolution predicts `anchors` sets of
    class logits and of box offsets per position. The outputs are `classes`, shaped
    `(batch, boxes, num_classes)`, and `boxes`, shaped `(batch, boxes, 4)`, with
    `boxes = anchors * (positions at stride 16 + positions at stride 32)`.

    Args:
        input_shape: Shape of one image. Defaults to `(96, 96, 3)`.
        num_classes: Object classes (background included). Defaults to `4`.
        anchors: Anchor boxes per position. Defaults to `3`.
        alpha: MobileNet width multiplier. Defaults to `0.25`.
        name: Model name. Defaults to `"detector"`.

    Returns:
        An uncompiled functional `keras.Model` with outputs `[classes, boxes]`.

    Examples:
        >>> shapes = [tuple(s) for s in reference_detector().output_shape]
        >>> shapes
        [(None, 135, 4), (None, 135, 4)]
    """
    layers = keras.layers
    base = keras.applications.MobileNet(input_shape=input_shape, alpha=alpha,
                                        include_top=False, weights=None)
    backbone = keras.Model(base.input, [base.get_layer("conv_pw_11_relu").output, base.output],
                           name="backbone")
    inputs = keras.Input(shape=input_shape, name="image")
    features = backbone(inputs)
    classes, boxes = [], []
    for i, f in enumerate(features):
        c = layers.Conv2D(anchors * num_classes, 3, padding="same", name=f"cls_head{i}")(f)
        classes.append(layers.Reshape((-1, num_classes), name=f"cls_flat{i}")(c))
        b = layers.Conv2D(anchors * 4, 3, padding="same", name=f"box_head{i}")(f)
        boxes.append(layers.Reshape((-1, 4), name=f"box_flat{i}")(b))
    out_c = layers.Concatenate(axis=1, name="classes")(classes)
    out_b = layers.Concatenate(axis=1, name="boxes")(boxes)
    return keras.Model(inputs, [out_c, out_b], name=name)
