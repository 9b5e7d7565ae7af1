"""A model as a file and its figures: exported for a step's mode and target, then timed and
scored in LiteRT (XNNPACK) and scored again on LiteRT's reference kernels."""

from typing import Any

import keras

from tfcompress.data import Dataset
from tfcompress.metrics import Metric


def export_file(model: keras.Model, path: str, mode: str, calib: Dataset, **device: Any) -> str:
    """Writes `model` as a `mode` .tflite (calibrated on `calib` where it needs data);
    `device` (target, max_flash, max_ram) goes to `to_tflite`."""
    from tfcompress.export import to_tflite
    from tfcompress.quantization import float_layer_names, is_quantize_aware

    # A quantization-aware model with float layers exports through post-training int8.
    needs_data = mode in ("int8", "int16x8") and (
        not is_quantize_aware(model) or bool(float_layer_names(model)))
    return to_tflite(model, path, mode, calib if needs_data else None, **device).path


def measure(model: keras.Model, path: str, mode: str, calib: Dataset, test: Dataset,
             runs: int, metric: Metric, **device: Any) -> dict:
    from tfcompress import _tflite
    from tfcompress.bench import benchmark, score

    bench = benchmark(export_file(model, path, mode, calib, **device), test, runs=runs,
                      threads=1, metric=metric).to_dict()
    reference, _ = score(_tflite.interpreter(path, target="litert-reference"), test, metric)
    return {"size_bytes": bench["size_bytes"], "gzip_bytes": bench["gzip_bytes"],
            "latency_ms_p50": bench["latency_ms_p50"], "latency_ms_p90": bench["latency_ms_p90"],
            "accuracy": bench["accuracy"], "accuracy_reference": reference,
            "samples": bench["num_samples"]}


def file_score(model: keras.Model, path: str, calib: Dataset, metric: Metric) -> float:
    """`metric` of `model`'s post-training int8 file (written to `path`, then removed) on the
    evaluation part of `calib` (the validation data in a run), in LiteRT."""
    import os

    from tfcompress import _tflite
    from tfcompress.bench import score

    try:
        export_file(model, path, "int8", calib)
        value, _ = score(_tflite.interpreter(path), calib.test, metric)
    finally:
        if os.path.exists(path):
            os.remove(path)
    return value


def metric_words(metric: Metric) -> str:
    return "accuracy" if metric.name == "top1" else metric.name
