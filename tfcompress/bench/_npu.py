"""`estimate_npu`: a `.tflite` file on an Arm Ethos-U NPU, as Vela compiles and estimates it
(no host timing means anything for an NPU), with its accuracy on LiteRT's reference kernels
(what the NPU computes); `compare_npu` sets several side by side."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfcompress import _ethosu, _targets, _vela
from tfcompress._ethosu import NpuReport


@dataclass(frozen=True)
class NpuBenchmark:
    """One file on one Ethos-U configuration: its size, Vela's report and, with labelled
    data, its score on LiteRT's reference kernels."""

    path: str
    size_bytes: int
    gzip_bytes: int
    npu: NpuReport
    accuracy: float | None = None
    num_samples: int = 0
    metric: str = "top1"

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict:
        return {"path": self.path, "size_bytes": self.size_bytes, "gzip_bytes": self.gzip_bytes,
                "accuracy": self.accuracy, "num_samples": self.num_samples,
                "metric": self.metric, "target": self.npu.accelerator, "npu": self.npu.to_dict()}


def estimate_npu(path: "str | os.PathLike", target: str = "ethos-u55-128", data: Any = None, *,
                 system_config: str | None = None, memory_mode: str | None = None,
                 metric: Any = None, split: str = "test", preprocessing: Any = None,
                 progress: Any = None) -> NpuBenchmark:
    """Compiles a `.tflite` file for an Arm Ethos-U NPU with Vela (the `npu` extra) and reads
    its estimates: ops on the NPU and on the CPU (with Vela's reasons), inference time and
    cycles, SRAM and flash.

    Args:
        path: An int8 `.tflite` file (integer input and output keep every op on the NPU:
            export it with `target="ethos-u55-128"` or `"tflm"`).
        target: The accelerator configuration, as Vela names it. Defaults to
            `"ethos-u55-128"`.
        data: Labelled data to score the file on LiteRT's reference kernels (as `benchmark`
            takes it). Defaults to `None`: no score.
        system_config: Vela's system configuration. Defaults to `None`: Vela's default for
            the accelerator (named in the report).
        memory_mode: Vela's memory mode. Defaults to `None`: Vela's default.
        metric: What `accuracy` holds (as in `benchmark`). Defaults to `None`: top-1.
        split: Which part of a `Dataset` or loader source is scored. Defaults to `"test"`.
        preprocessing: For a loader source: what its images become (as in `benchmark`).
            Defaults to `None`: as the file's metadata says.
        progress: Called with a short message at each phase. Defaults to `None`.

    Returns:
        An `NpuBenchmark`.

    Raises:
        ValueError: Without Vela, for a configuration Vela does not have, or a file it
            cannot compile.
    """
    from tfcompress import _tflite
    from tfcompress.bench._benchmark import benchmark

    if not _targets.is_npu(target):
        raise ValueError(f"estimate_npu takes an Arm Ethos-U target (ethos-u55-128, ...), got "
                         f"{target!r}; time other targets with benchmark().")
    _vela.check(target, system_config, memory_mode)
    def scoring_only(message: str) -> None:  # the one timed run only loads the file
        if progress and not message.startswith("timing"):
            progress(message)

    base = benchmark(path, data, runs=1, warmup=0, target="litert-reference", metric=metric,
                     split=split, preprocessing=preprocessing, progress=scoring_only) \
        if data is not None else None
    if progress:
        progress(f"compiling {Path(path).name} with Vela for {target}")
    content = _tflite.read_model(path)
    npu = _ethosu.compile_model(content, target, system_config, memory_mode)
    import gzip

    return NpuBenchmark(
        path=os.fspath(path), size_bytes=len(content), gzip_bytes=len(gzip.compress(content)),
        npu=npu, accuracy=None if base is None else base.accuracy,
        num_samples=0 if base is None else base.num_samples,
        metric="top1" if base is None else base.metric)


def compare_npu(reports: Sequence[NpuBenchmark], baseline: int = 0) -> str:
    """Formats NPU estimates as a side-by-side table, with ratios against `reports[baseline]`."""
    if not reports:
        raise ValueError("compare_npu needs at least one report.")
    base = reports[baseline]
    scored = any(r.accuracy is not None for r in reports)
    header = ("model", "size KB", "x smaller", "NPU ops", "est. ms", "x faster", "cycles",
              "SRAM KiB", "flash KiB") + (("accuracy" if base.metric == "top1" else base.metric,)
                                          if scored else ())
    rows = [header]
    for r in reports:
        n = r.npu
        row = (r.name, f"{r.size_bytes / 1024:.1f}", f"{base.size_bytes / r.size_bytes:.2f}",
               f"{len(n.ops) - len(n.cpu_ops)}/{len(n.ops)}", f"{n.inference_ms:.3f}",
               f"{base.npu.inference_ms / n.inference_ms:.2f}", f"{n.cycles:,}",
               f"{n.sram_bytes / 1024:.2f}", f"{n.flash_bytes / 1024:.2f}")
        if scored:
            row += ("-" if r.accuracy is None else (
                f"{100 * r.accuracy:.2f}%" if r.metric.startswith("top") else f"{r.accuracy:.4g}"),)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"estimated by Vela on {base.npu.configuration()}"
                 + ("; scored on LiteRT reference kernels" if scored else ""))
    for r in reports:
        lines += [f"{r.name}: CPU: {o.op} (layer {o.layer}): {o.reason}" for o in r.npu.cpu_ops]
    return "\n".join(lines)
