"""The reference CNN built in `tf_keras` (Keras 2), layer for layer as
`tfcompress.reference.reference_cnn()`, for the tfmot side of the comparison scripts.

Import it only in a process where tfmot/tf_keras run (TF_USE_LEGACY_KERAS=1).
"""


def build_reference_cnn(seed: int):
    """The tf_keras twin of `reference_cnn()`, with weights initialised from `seed`."""
    import tf_keras as k2

    k2.utils.set_random_seed(seed)
    L = k2.layers
    inputs = k2.Input((28, 28, 1))
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(x))
    x = L.MaxPooling2D()(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(x))
    x = L.Conv2D(32, 1, use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(x))
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu")(x)
    x = L.Dropout(0.2)(x)
    return k2.Model(inputs, L.Dense(10)(x))
