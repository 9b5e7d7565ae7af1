"""Export Keras 3 models to verified `.tflite` files."""

from tfcompress.export._convert import QUANTIZATION_MODES, ExportReport, to_tflite

__all__ = ["QUANTIZATION_MODES", "ExportReport", "to_tflite"]
