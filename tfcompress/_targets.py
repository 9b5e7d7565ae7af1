"""The runtimes a `.tflite` file is made for, verified and measured on: one entry each.

Imports nothing heavy (the CLI reads the choices). Each `Target` says how its file is made
(batch fixed to 1, integer input and output), whether device budgets apply, and which module
of `tfcompress.export` adds what the device needs beyond the file (measures it, checks and
writes its companion files): a new target is one entry here, plus that module if it has one.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One runtime a file is verified on.

    Attributes:
        name: What `target=` and `--target` take.
        runtime: How reports call it.
        fixed_batch: The file's batch is fixed to 1 (no SHAPE/STRIDED_SLICE/PACK for reshapes).
        integer_io: An int8/int16x8 file takes and gives integers by default.
        device: The module in `tfcompress.export` that measures the file on the device (with
            the `max_flash`/`max_ram` budgets) and writes its companion files, or `None`.
        needs: `(module, extra)`: a package the runtime needs and the extra that installs it.
        runs_on: The target whose interpreter runs the file on this host when it is not the
            target itself (an NPU's file is checked on the reference kernels). Defaults to
            `None`: the target itself.
        quantizations: The quantization modes the target takes. Defaults to `None`: all.
        device_options: The keyword arguments of `to_tflite` its device module takes.
        shared_zero_points: The file keeps one copy of each distinct zero-point vector, as
            every tensor's own copy costs flash (a device's file is read in place).
    """

    name: str
    runtime: str
    fixed_batch: bool = False
    integer_io: bool = False
    device: str | None = None
    needs: tuple[str, str] | None = None
    runs_on: str | None = None
    quantizations: tuple[str, ...] | None = None
    device_options: tuple[str, ...] = ()
    shared_zero_points: bool = False

    @property
    def interpreter(self) -> str:
        """The target whose interpreter runs this target's files here."""
        return self.runs_on or self.name


REGISTRY: dict[str, Target] = {t.name: t for t in (
    # LiteRT with its default XNNPACK delegate
    Target("litert", "LiteRT (XNNPACK)"),
    # LiteRT's builtin reference kernels: what other delegates and accelerators are checked
    # against, and what TensorFlow Lite for Microcontrollers computes
    Target("litert-reference", "LiteRT reference kernels"),
    # TensorFlow Lite for Microcontrollers (the `micro` extra): C++ sources beside the file
    Target("tflm", "TFLite Micro", fixed_batch=True, integer_io=True, device="_micro",
           needs=("tflite_micro", "micro"), device_options=("max_flash", "max_ram"),
           shared_zero_points=True),
)}
# Arm Ethos-U NPUs: one target per accelerator configuration Arm's Vela compiles for
# (`ethos-u55-128`, ...; the `npu` extra), read from Vela itself when a name is checked.
NPU_PREFIX = "ethos-u"
NPU_OPTIONS = ("system_config", "memory_mode", "allow_cpu_ops", "max_latency_ms", "max_sram",
               "max_flash")
TARGETS: tuple[str, ...] = tuple(REGISTRY)


# Every keyword a device module takes (`to_tflite` passes those its target takes).
DEVICE_OPTIONS = ("max_flash", "max_ram", "system_config", "memory_mode", "allow_cpu_ops",
                  "max_latency_ms", "max_sram")


def takers(option: str) -> str:
    """The targets that take a device `option`, in words."""
    names = [t.name for t in REGISTRY.values() if option in t.device_options]
    return " and ".join(names + (["the Ethos-U targets"] if option in NPU_OPTIONS else []))


def is_npu(name: str) -> bool:
    return isinstance(name, str) and name.startswith(NPU_PREFIX)


def get(name: str) -> Target:
    """The target called `name`; one line naming the choices for an unknown one. An Ethos-U
    name is checked against Vela's own list when the target is used (`_tflite.check_target`)."""
    if is_npu(name):
        return Target(name, f"Arm {name} (Vela estimate)", fixed_batch=True, integer_io=True,
                      device="_npu", needs=("ethosu.vela", "npu"), runs_on="litert-reference",
                      quantizations=("int8", "int16x8"), device_options=NPU_OPTIONS)
    if name not in REGISTRY:
        raise ValueError(f"Unknown target {name!r}; expected one of {TARGETS}, or an Arm "
                         f"Ethos-U configuration ({NPU_PREFIX}55-128, ...: the npu extra).")
    return REGISTRY[name]


def runtime(name: str) -> str:
    """How reports call the target `name`."""
    return get(name).runtime
