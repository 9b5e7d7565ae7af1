"""The runtimes a `.tflite` file is verified and measured on (no imports: the CLI reads it)."""

# LiteRT with its default XNNPACK delegate, LiteRT's builtin reference kernels (what other
# delegates and most accelerators are checked against), and TensorFlow Lite for
# Microcontrollers (the `micro` extra).
TARGETS: tuple[str, ...] = ("litert", "litert-reference", "tflm")
TARGET_NAMES = {"litert": "LiteRT (XNNPACK)", "litert-reference": "LiteRT reference kernels",
                "tflm": "TFLite Micro"}
