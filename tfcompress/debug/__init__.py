"""Finding where a compressed model loses accuracy: per-layer quantization error against the
`.tflite` file, and per-layer sensitivity scans."""

from tfcompress.debug._layer_errors import LayerError, LayerErrors, layer_errors
from tfcompress.debug._sensitivity import (
    TECHNIQUES,
    LayerSensitivity,
    SensitivityScan,
    sensitivity,
)

__all__ = [
    "TECHNIQUES",
    "LayerError",
    "LayerErrors",
    "LayerSensitivity",
    "SensitivityScan",
    "layer_errors",
    "sensitivity",
]
