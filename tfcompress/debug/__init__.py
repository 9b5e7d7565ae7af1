"""Finding where a compressed model loses accuracy: per-layer quantization error against the
`.tflite` file, and per-layer sensitivity scans."""

from tfcompress.debug._layer_errors import LayerError, LayerErrors, layer_errors

__all__ = ["LayerError", "LayerErrors", "layer_errors"]
