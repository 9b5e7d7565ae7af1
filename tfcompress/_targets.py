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
    """

    name: str
    runtime: str
    fixed_batch: bool = False
    integer_io: bool = False
    device: str | None = None
    needs: tuple[str, str] | None = None


REGISTRY: dict[str, Target] = {t.name: t for t in (
    # LiteRT with its default XNNPACK delegate
    Target("litert", "LiteRT (XNNPACK)"),
    # LiteRT's builtin reference kernels: what other delegates and accelerators are checked
    # against, and what TensorFlow Lite for Microcontrollers computes
    Target("litert-reference", "LiteRT reference kernels"),
    # TensorFlow Lite for Microcontrollers (the `micro` extra): C++ sources beside the file
    Target("tflm", "TFLite Micro", fixed_batch=True, integer_io=True, device="_micro",
           needs=("tflite_micro", "micro")),
)}
TARGETS: tuple[str, ...] = tuple(REGISTRY)
TARGET_NAMES = {name: t.runtime for name, t in REGISTRY.items()}


def get(name: str) -> Target:
    """The target called `name`; one line naming the choices for an unknown one."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown target {name!r}; expected one of {TARGETS}.")
    return REGISTRY[name]
