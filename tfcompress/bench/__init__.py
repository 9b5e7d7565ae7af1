"""Benchmark `.tflite` models in the LiteRT interpreter, or on an Arm Ethos-U NPU as Vela
estimates it."""

from tfcompress.bench._benchmark import (
    BenchmarkReport,
    benchmark,
    compare,
    score,
    time_side_by_side,
    to_json,
)
from tfcompress.bench._inspect import inspect_model
from tfcompress.bench._npu import NpuBenchmark, compare_npu, estimate_npu

__all__ = [
    "BenchmarkReport",
    "NpuBenchmark",
    "benchmark",
    "compare",
    "compare_npu",
    "estimate_npu",
    "inspect_model",
    "score",
    "time_side_by_side",
    "to_json",
]
