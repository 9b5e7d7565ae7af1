"""Arm's Vela compiler for Ethos-U NPUs (the `npu` extra): whether it is installed, and the
accelerators, system configurations and memory modes it knows, read from Vela itself.
Compiling is `tfcompress._ethosu`."""

import importlib.util
import os

CUSTOM_OP = "ethos-u"  # the custom op Vela writes; TFLite Micro registers it with AddEthosU
_CONFIG = os.path.join("Arm", "vela.ini")  # Vela's own configuration file of Arm systems
_INSTALL = "pip install 'tfcompress[npu]'"


def installed() -> bool:
    return importlib.util.find_spec("ethosu") is not None and \
        importlib.util.find_spec("ethosu.vela") is not None


def _require() -> None:
    if not installed():
        raise ValueError(f"The Arm Ethos-U targets compile with Arm's Vela (the ethos-u-vela "
                         f"package), which is not installed: {_INSTALL}.")


def version() -> str:
    _require()
    from ethosu.vela._version import __version__

    return __version__


def accelerators() -> tuple[str, ...]:
    """Every accelerator configuration Vela compiles for (`ethos-u55-32` ...), read from it."""
    _require()
    from ethosu.vela.architecture_features import Accelerator

    return tuple(Accelerator.member_list())


def _sections(kind: str) -> tuple[str, ...]:
    import configparser

    from ethosu.vela.architecture_features import CONFIG_FILES_PATH

    config = configparser.ConfigParser()
    config.read(os.path.join(CONFIG_FILES_PATH, _CONFIG))
    return tuple(s.split(".", 1)[1] for s in config.sections() if s.startswith(kind + "."))


def system_configs() -> tuple[str, ...]:
    """The system configurations of Vela's Arm configuration file."""
    _require()
    return _sections("System_Config")


def memory_modes() -> tuple[str, ...]:
    """The memory modes of Vela's Arm configuration file."""
    _require()
    return _sections("Memory_Mode")


def check(target: str, system_config: str | None = None, memory_mode: str | None = None
          ) -> None:
    """Raises, before any work, for a missing Vela or a configuration it does not have."""
    _require()
    for what, value, known in (("accelerator configuration", target, accelerators()),
                               ("system configuration", system_config, system_configs()),
                               ("memory mode", memory_mode, memory_modes())):
        if value is not None and value not in known:
            raise ValueError(f"Vela {version()} has no {what} {value!r}; it has: "
                             f"{', '.join(known)}.")
