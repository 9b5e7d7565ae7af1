"""Compiling an int8 file for an Arm Ethos-U NPU with Vela (`compile_model`) and reading back
where every op runs (NPU or CPU, with Vela's reason) and Vela's estimates (time, cycles, SRAM,
flash).

Vela is run as its own command line (`python -m ethosu.vela`), its stable interface, in a
scratch folder; its figures are read from the summary CSV it writes and the placement from
the compiled file itself, so what tfcompress reports is what `vela` reports on the same file
and configuration. Nothing here models the NPU.
"""

import csv
import glob
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np

from tfcompress import _tflite, _vela
from tfcompress._vela import CUSTOM_OP


@dataclass(frozen=True)
class NpuOp:
    """One op of the int8 file: where it runs and, on the CPU, why (Vela's words)."""

    index: int
    op: str
    layer: str
    device: str  # "NPU" or "CPU"
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NpuReport:
    """What Vela made of a file for one Ethos-U configuration.

    Attributes:
        accelerator: Vela's accelerator configuration (the target's name).
        system_config: Vela's system configuration (its default for the accelerator when
            none was asked for).
        memory_mode: Vela's memory mode (likewise).
        vela_version: The `ethos-u-vela` that compiled it.
        inference_ms: Vela's estimated time for one inference, in milliseconds.
        cycles: Vela's estimated cycles for one inference (NPU and memory, all together).
        npu_cycles: The cycles the NPU computes.
        macs: Multiply-accumulates per inference.
        sram_bytes: SRAM used (feature maps, and weights where the memory mode puts them there).
        dram_bytes: DRAM used.
        flash_bytes: On- and off-chip flash used (weights and command stream).
        model_bytes: Size of the compiled file (what the firmware stores).
        arena_bytes_planned: The tensor arena Vela planned (its offline allocation).
        arena_bytes: That arena with headroom for TFLite Micro's bookkeeping.
        ops: Every op of the int8 file with where it runs.
        compiled_ops: The ops of the compiled file (`ethos-u` for each part on the NPU).
        files: The files written beside the model, if any.
        compiled: The compiled file's bytes.
    """

    accelerator: str
    system_config: str
    memory_mode: str
    vela_version: str
    inference_ms: float
    cycles: int
    npu_cycles: int
    macs: int
    sram_bytes: int
    dram_bytes: int
    flash_bytes: int
    model_bytes: int
    arena_bytes_planned: int
    arena_bytes: int
    ops: tuple[NpuOp, ...]
    compiled_ops: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    compiled: bytes = field(default=b"", repr=False, compare=False)

    @property
    def cpu_ops(self) -> tuple[NpuOp, ...]:
        return tuple(o for o in self.ops if o.device == "CPU")

    @property
    def npu_share(self) -> float:
        return 1.0 - len(self.cpu_ops) / max(1, len(self.ops))

    # what `_micro.files` reads to write the C++ files
    @property
    def model_flash_bytes(self) -> int:
        return self.model_bytes

    @property
    def arena_bytes_measured(self) -> int:
        return self.arena_bytes_planned

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["compiled"]
        out.update(ops=[o.to_dict() for o in self.ops], compiled_ops=list(self.compiled_ops),
                   files=list(self.files), npu_ops=len(self.ops) - len(self.cpu_ops),
                   cpu_ops=len(self.cpu_ops), npu_share=self.npu_share)
        return out

    def configuration(self) -> str:
        return (f"{self.accelerator}, {self.system_config}, {self.memory_mode} "
                f"(Vela {self.vela_version})")

    def op_table(self) -> str:
        """Every op of the file, the Keras layer it came from and where it runs, as a
        Markdown table."""
        return op_table([o.to_dict() for o in self.ops])

    def __str__(self) -> str:
        npu = len(self.ops) - len(self.cpu_ops)
        memory = [f"SRAM {_kib(self.sram_bytes)}"]
        memory += [f"DRAM {_kib(self.dram_bytes)}"] if self.dram_bytes else []
        memory += [f"flash {_kib(self.flash_bytes)}"] if self.flash_bytes else []
        lines = [f"Arm Ethos-U: {self.configuration()}: {npu} of {len(self.ops)} ops on the NPU; "
                 f"estimated {self.inference_ms:.3f} ms ({self.cycles:,} cycles) per inference; "
                 f"{', '.join(memory)}; compiled model {self.model_bytes:,} bytes, arena "
                 f"{self.arena_bytes:,} bytes"]
        lines += [f"  CPU: {o.op} (layer {o.layer}): {o.reason}" for o in self.cpu_ops]
        return "\n".join(lines)


def op_table(ops: list[dict]) -> str:
    """`ops` (`NpuOp.to_dict()` rows) as a Markdown table."""
    lines = ["| # | op | layer | runs on | why not on the NPU |", "|---|---|---|---|---|"]
    lines += [f"| {o['index']} | {o['op']} | {o['layer']} | {o['device']} | "
              f"{o['reason'].replace('|', '/')} |" for o in ops]
    return "\n".join(lines)


def _kib(n: int) -> str:
    return f"{n / 1024:.2f} KiB"


def compile_model(content: bytes, accelerator: str, system_config: str | None = None,
                  memory_mode: str | None = None,
                  summary: "_tflite.GraphSummary | None" = None) -> NpuReport:
    """Compiles `content` (an int8 `.tflite`) with Vela; returns its report, which holds the
    compiled file. Raises ValueError with Vela's own last line when it cannot compile the file."""
    _vela.check(accelerator, system_config, memory_mode)
    summary = summary or _tflite.summarize(_tflite.interpreter(content, target="litert-reference"))
    with tempfile.TemporaryDirectory(prefix="tfcompress-vela-") as work:
        source = os.path.join(work, "model.tflite")
        with open(source, "wb") as f:
            f.write(content)
        args = [sys.executable, "-m", "ethosu.vela", source, "--output-dir", work,
                "--accelerator-config", accelerator, "--show-cpu-operations"]
        args += ["--system-config", system_config] if system_config else []
        args += ["--memory-mode", memory_mode] if memory_mode else []
        run = subprocess.run(args, capture_output=True, text=True, cwd=work)
        compiled = os.path.join(work, "model_vela.tflite")
        summaries = glob.glob(os.path.join(work, "model_summary_*.csv"))
        if run.returncode != 0 or not os.path.exists(compiled) or not summaries:
            said = [ln.strip() for ln in (run.stderr + run.stdout).splitlines() if ln.strip()]
            raise ValueError(f"Vela could not compile the file for {accelerator}: "
                             f"{said[-1] if said else 'no message'}")
        with open(compiled, "rb") as f:
            out = f.read()
        with open(summaries[0], newline="") as f:
            row = next(csv.DictReader(f))
    return _report(row, out, summary, accelerator, _reasons(run.stdout))


def _reasons(stdout: str) -> dict[str, str]:
    """Vela's reason for each op it will not put on the NPU, by the op's output name."""
    reasons: dict[str, str] = {}
    for block in re.split(r"\n\s*\n", stdout):
        found = re.search(r"operator: (\S+), ofm: '(.*)'\s*\nReason: (.*)", block, re.S)
        if found:
            reasons[found.group(2)] = " ".join(found.group(3).split())
    return reasons


def _report(row: dict, compiled: bytes, summary: "_tflite.GraphSummary", accelerator: str,
            reasons: dict[str, str]) -> NpuReport:
    model = _parse(compiled)
    graph = model.subgraphs[0]
    names = {i: _text(t.name) for i, t in enumerate(graph.tensors)}
    compiled_ops, on_cpu = [], set()
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = _op_name(code)
        compiled_ops.append(name)
        if name != CUSTOM_OP:
            on_cpu.update(names[i] for i in op.outputs)
    ops = tuple(NpuOp(o.index, o.op, o.layer, "CPU" if o.output_name in on_cpu else "NPU",
                      reasons.get(o.output_name, "Vela left it to the CPU")
                      if o.output_name in on_cpu else "")
                for o in summary.ops)
    planned = _planned_arena(model, graph)

    def kib(key: str) -> int:
        return round(float(row.get(key) or 0) * 1024)

    return NpuReport(
        accelerator=accelerator, system_config=row["system_config"],
        memory_mode=row["memory_mode"], vela_version=_vela.version(),
        inference_ms=float(row["inference_time"]) * 1000, cycles=int(row["cycles_total"]),
        npu_cycles=int(row["cycles_npu"]), macs=int(row["nn_macs"]),
        sram_bytes=kib("sram_memory_used"), dram_bytes=kib("dram_memory_used"),
        flash_bytes=kib("on_chip_flash_memory_used") + kib("off_chip_flash_memory_used"),
        model_bytes=len(compiled), arena_bytes_planned=planned,
        arena_bytes=_tflite.with_headroom(planned), ops=ops, compiled_ops=tuple(compiled_ops),
        compiled=compiled)


def _parse(content: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(content))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _op_name(code) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    if code.customCode:
        return _text(code.customCode)
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return {v: k for k, v in vars(schema.BuiltinOperator).items()
            if not k.startswith("_")}.get(builtin, str(builtin))


def _planned_arena(model, graph) -> int:
    """The end of the last tensor in Vela's offline memory plan (TFLite Micro's
    `OfflineMemoryAllocation` metadata: version, subgraph, count, then an offset per tensor,
    -1 for tensors outside the arena)."""
    for entry in model.metadata or ():
        if _text(entry.name) == "OfflineMemoryAllocation":
            plan = np.frombuffer(bytes(model.buffers[entry.buffer].data), np.int32)[3:]
            ends = [int(offset) + _nbytes(graph.tensors[i])
                    for i, offset in enumerate(plan) if offset >= 0 and i < len(graph.tensors)]
            return max(ends, default=0)
    return 0


def _nbytes(tensor) -> int:
    from tensorflow.lite.python import schema_py_generated as schema

    sizes = {schema.TensorType.INT8: 1, schema.TensorType.UINT8: 1, schema.TensorType.INT16: 2,
             schema.TensorType.INT32: 4, schema.TensorType.FLOAT32: 4, schema.TensorType.INT64: 8,
             schema.TensorType.BOOL: 1, schema.TensorType.FLOAT16: 2}
    shape = tensor.shape if tensor.shape is not None else ()
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) * sizes.get(tensor.type, 4)
