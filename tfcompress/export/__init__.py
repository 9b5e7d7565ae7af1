"""Export Keras 3 models to verified `.tflite` files."""

from tfcompress._tflite import TARGETS
from tfcompress.export._export import QUANTIZATION_MODES, to_tflite
from tfcompress.export._micro import MicroReport
from tfcompress.export._params import dequantize_output, quantize_input
from tfcompress.export._report import ExportReport

__all__ = ["QUANTIZATION_MODES", "TARGETS", "ExportReport", "MicroReport", "dequantize_output",
           "quantize_input", "to_tflite"]
