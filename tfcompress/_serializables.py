"""Imports every module that defines a class tfcompress saves into `.keras` files, so that
Keras can load them: the fake-quant layers and the Distiller. Imported by `tfcompress`
itself as soon as Keras is (see `tfcompress/__init__.py`)."""

import tfcompress.detection._anchors  # noqa: F401
import tfcompress.detection._loss  # noqa: F401
import tfcompress.distillation._distiller  # noqa: F401
import tfcompress.quantization._layers  # noqa: F401
