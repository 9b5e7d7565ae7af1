"""Benchmark `.tflite` models in the LiteRT interpreter."""

from tfcompress.bench._benchmark import (
    BenchmarkReport,
    benchmark,
    compare,
    score,
    time_side_by_side,
    to_json,
)
from tfcompress.bench._inspect import inspect_model

__all__ = [
    "BenchmarkReport",
    "benchmark",
    "compare",
    "inspect_model",
    "score",
    "time_side_by_side",
    "to_json",
]
