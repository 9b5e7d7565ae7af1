"""The device module of the Arm Ethos-U targets (`ethos-u55-128`, ...; see
`tfcompress._targets`): compiles the int8 file with Arm's Vela (`tfcompress._vela`), checks
where its ops run and Vela's estimates against the budgets (`measure`), and writes the
compiled model and its C++ files beside the file (`files`)."""

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from tfcompress import _ethosu, _io, _tflite, _vela
from tfcompress._ethosu import NpuReport
from tfcompress.export import _micro


def measure(content: bytes, target: str, summary: "_tflite.GraphSummary", *,
            system_config: str | None = None, memory_mode: str | None = None,
            allow_cpu_ops: bool = False, max_latency_ms: float | None = None,
            max_sram: int | None = None, max_flash: int | None = None, **_: object
            ) -> NpuReport:
    """Compiles the file with Vela and checks it: ops on the CPU (unless allowed) and the
    budgets each raise one line, before anything is written."""
    report = _ethosu.compile_model(content, target, system_config, memory_mode, summary)
    check(report, allow_cpu_ops=allow_cpu_ops, max_latency_ms=max_latency_ms,
          max_sram=max_sram, max_flash=max_flash)
    return report


def check(report: NpuReport, *, allow_cpu_ops: bool = False,
          max_latency_ms: float | None = None, max_sram: int | None = None,
          max_flash: int | None = None, **_: object) -> None:
    """Raises one line for ops on the CPU (unless allowed) or a budget the report exceeds."""
    if report.cpu_ops and not allow_cpu_ops:
        first = report.cpu_ops[0]
        more = len(report.cpu_ops) - 1
        raise ValueError(
            f"On {report.configuration()}, {len(report.cpu_ops)} of {len(report.ops)} ops "
            f"would run on the CPU: {first.op} from layer {first.layer!r} ({first.reason})"
            + (f" and {more} more" if more else "") + ". Nothing was written. Replace that "
            "layer, or accept CPU ops with allow_cpu_ops=True (--allow-cpu-ops).")
    for value, limit, what, option in (
            (report.inference_ms, max_latency_ms, "an estimated {:.3f} ms per inference",
             "max_latency_ms"),
            (report.sram_bytes, max_sram, "{:,} bytes of SRAM", "max_sram"),
            (report.model_bytes, max_flash, "{:,} bytes of flash (the compiled model)",
             "max_flash")):
        if limit is not None and value > limit:
            raise ValueError(
                f"On {report.configuration()}, the model takes {what.format(value)}, over "
                f"{option} {limit:,}. Nothing was written. Compress it further (tfcompress "
                "compress), choose a larger configuration, or raise the budget.")


def compiled_path(path: "str | os.PathLike") -> str:
    base, ext = os.path.splitext(os.fspath(path))
    return f"{base}_vela{ext or '.tflite'}"


def check_outputs(path: "str | os.PathLike", *inputs: object) -> None:
    """Raises, before any work, unless the compiled model and the C++ files beside `path` can
    be written without losing anything (see `_micro.check_outputs`)."""
    _micro.check_outputs(path, *inputs)
    compiled = compiled_path(path)
    if os.path.realpath(compiled) == os.path.realpath(path):
        raise ValueError(f"The output {os.fspath(path)} is named like the compiled model "
                         "written beside it. Name the model file <name>.tflite.")
    _io.check_not_input(compiled, *inputs)
    if os.path.lexists(compiled) and not os.path.isfile(compiled):
        raise ValueError(f"{compiled} is in the way of the compiled model (it is not a regular "
                         "file). Nothing was written. Move it, or choose another output name.")


def files(content: bytes, path: "str | os.PathLike", report: NpuReport,
          summary: "_tflite.GraphSummary", class_names: Sequence[str] | None
          ) -> dict[str, bytes]:
    """`<stem>_vela.tflite` and the C++ files of the compiled model: `<stem>.h`, `.cc` and
    `_ops.h` (its CPU ops and the Ethos-U op as a TFLite Micro op resolver)."""
    cpu = sorted({o for o in report.compiled_ops if o != _vela.CUSTOM_OP})
    sources = _micro.files(
        report.compiled, path, report, summary, class_names, ops=[_vela.CUSTOM_OP, *cpu],
        source=os.path.basename(compiled_path(path)),
        arena_note=f"planned by Vela for {report.configuration()}")
    return {compiled_path(path): report.compiled, **sources}


def preview(model: Any, target: str, system_config: str | None = None,
            memory_mode: str | None = None) -> NpuReport:
    """Where the ops of `model`'s int8 file would run on `target`, before any training: the
    float model is converted as post-training int8 (batch 1, integer input and output,
    ranges from a few random images: only the structure matters to Vela's checks) and
    compiled with Vela."""
    import numpy as np

    from tfcompress.export._convert import convert, expected_input_shape

    _vela.check(target, system_config, memory_mode)
    shape = expected_input_shape(model)
    if shape is None:
        raise ValueError("The NPU preview needs a model with one image input of known shape.")
    calib = np.random.default_rng(0).uniform(0, 1, (4, *shape)).astype("float32")
    with tempfile.TemporaryDirectory(prefix="tfcompress-npu-preview-") as work:
        content = convert(model, "int8", calib, True, work, batch=1)
    return _ethosu.compile_model(content, target, system_config, memory_mode)


def warn_cpu_layers(model: Any, target: str, system_config: str | None = None,
                    memory_mode: str | None = None, stacklevel: int = 3) -> NpuReport | None:
    """Warns, naming each layer and Vela's reason, when some of `model`'s ops would run on
    `target`'s CPU rather than its NPU (see `preview`); returns the preview, or None where
    the model cannot be previewed (the warning says why)."""
    import warnings

    try:
        report = preview(model, target, system_config, memory_mode)
    except ValueError as e:
        warnings.warn(f"Could not check which layers map to the NPU {target}: {e}",
                      stacklevel=stacklevel)
        return None
    if report.cpu_ops:
        layers = "; ".join(f"{o.layer} ({o.op}: {o.reason})" for o in report.cpu_ops)
        warnings.warn(
            f"On {report.configuration()}, {len(report.cpu_ops)} of {len(report.ops)} ops of "
            f"this model would not run on the NPU but on the CPU: {layers}. Vela's checks on "
            "its int8 structure; change those layers before training, or the export will "
            "need allow_cpu_ops.", stacklevel=stacklevel)
    return report
