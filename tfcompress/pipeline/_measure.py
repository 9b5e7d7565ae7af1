"""A model as a file and its figures: exported for a step's mode and target, then timed and
scored in LiteRT (XNNPACK) and scored again on LiteRT's reference kernels."""

from typing import Any

import keras

from tfcompress.data import Dataset
from tfcompress.metrics import Metric


def export_report(model: keras.Model, path: str, mode: str, calib: Dataset, **device: Any
                  ) -> Any:
    """Writes `model` as a `mode` .tflite (calibrated on `calib` where it needs data) and
    returns `to_tflite`'s report; `device` (target and its settings) goes to `to_tflite`."""
    from tfcompress.export import to_tflite
    from tfcompress.quantization import float_layer_names, is_quantize_aware

    # A quantization-aware model with float layers exports through post-training int8.
    needs_data = mode in ("int8", "int16x8") and (
        not is_quantize_aware(model) or bool(float_layer_names(model)))
    return to_tflite(model, path, mode, calib if needs_data else None, **device)


def export_file(model: keras.Model, path: str, mode: str, calib: Dataset, **device: Any) -> str:
    """`export_report`'s file."""
    return export_report(model, path, mode, calib, **device).path


def npu_figures(report: Any) -> dict | None:
    """The figures a report keeps of a file compiled for an Ethos-U NPU, else None."""
    npu = getattr(report, "npu", None)
    if npu is None:
        return None
    return {"accelerator": npu.accelerator, "system_config": npu.system_config,
            "memory_mode": npu.memory_mode, "vela_version": npu.vela_version,
            "inference_ms": npu.inference_ms, "cycles": npu.cycles,
            "sram_bytes": npu.sram_bytes, "dram_bytes": npu.dram_bytes,
            "flash_bytes": npu.flash_bytes, "model_bytes": npu.model_bytes,
            "arena_bytes": npu.arena_bytes, "npu_ops": len(npu.ops) - len(npu.cpu_ops),
            "cpu_ops": [f"{o.op} ({o.layer}): {o.reason}" for o in npu.cpu_ops],
            "ops": [o.to_dict() for o in npu.ops]}


def measure(model: keras.Model, path: str, mode: str, calib: Dataset, test: Dataset,
             runs: int, metric: Metric, **device: Any) -> dict:
    from tfcompress import _tflite
    from tfcompress.bench import benchmark, score

    report = export_report(model, path, mode, calib, **device)
    bench = benchmark(path, test, runs=runs, threads=1, metric=metric).to_dict()
    reference, _ = score(_tflite.interpreter(path, target="litert-reference"), test, metric)
    return {"size_bytes": bench["size_bytes"], "gzip_bytes": bench["gzip_bytes"],
            "latency_ms_p50": bench["latency_ms_p50"], "latency_ms_p90": bench["latency_ms_p90"],
            "accuracy": bench["accuracy"], "accuracy_reference": reference,
            "samples": bench["num_samples"], "npu": npu_figures(report)}


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
