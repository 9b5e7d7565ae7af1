"""Helpers shared by the CLI commands: user-error handling, quiet output and data options."""

import contextlib
import contextvars
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _own_warnings_only(message, category, filename, lineno, file=None, line=None) -> None:
    """Shows tfcompress's own warnings as one `warning:` line on stderr (a calibration set
    outside the model's range, an empty class folder...); other packages' are dropped."""
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep) and \
            issubclass(category, UserWarning):
        text = " ".join(str(message).split())
        if text not in _SEEN.get():
            _SEEN.set(_SEEN.get() | {text})
            click.echo(f"warning: {text}", err=True)


class FloatRange(click.FloatRange):
    """`click.FloatRange` that also refuses NaN (which compares false with every bound, so
    click lets it through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


class WeightBitsType(click.ParamType):
    """A `--weight-bits`: `4` or `8` for every weight layer, or a comma list of
    `PATTERN=BITS` (fnmatch patterns of layer names) with at most one bare width for the rest:
    `4,conv1=8` gives every layer 4 bits but `conv1`. Converts to what `quantize_aware`'s
    `weight_bits` takes; `auto` stays `"auto"` (the command scans the model for it)."""

    name = "bits"

    def get_metavar(self, param, *args, **kwargs) -> str:
        return "[4|8|auto|PATTERN=BITS,...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, dict)) or value == "auto":
            return value
        rest, by_name = None, {}
        for item in (part.strip() for part in str(value).split(",")):
            name, _, bits = item.rpartition("=")
            if bits not in ("4", "8") or (not name and "=" in item):
                self.fail(f"expected 4, 8 or PATTERN=4/8 items, got {item!r} in {value!r}.",
                          param, ctx)
            if name:
                by_name[name.strip()] = int(bits)
            elif rest is not None:
                self.fail(f"one bare width for the other layers, got {value!r}.", param, ctx)
            else:
                rest = int(bits)
        if not by_name:
            return rest
        return {**by_name, "*": rest} if rest is not None else by_name


def auto_weight_bits(model, data, bits):
    """`bits`, or for `auto` the layers an `int4` sensitivity scan of `model` on `data` gives
    4-bit weights within one point of int8 (said on stderr)."""
    if bits != "auto":
        return bits
    from tfcompress.debug import sensitivity

    say("scanning every layer with 4-bit weights alone (the rest int8) on the held-out images")
    chosen = sensitivity(model, data, "int4").int4_layers(0.01)
    say(f"4-bit weights: {', '.join(chosen) or 'none (each costs over 1 point)'}")
    return chosen


class TargetType(click.ParamType):
    """A `--target`: `litert`, `litert-reference`, `tflm`, or an Arm Ethos-U configuration
    that Vela compiles for (`ethos-u55-128`, ...), checked before any work."""

    name = "target"

    @property
    def choices(self) -> tuple[str, ...]:
        """The targets that need no Vela to name (the Ethos-U ones come from Vela)."""
        from tfcompress._targets import TARGETS

        return TARGETS

    def get_metavar(self, param, *args, **kwargs) -> str:
        from tfcompress._targets import TARGETS

        return "[" + "|".join(TARGETS) + "|ethos-u55-128|...]"

    def convert(self, value, param, ctx):
        from tfcompress import _tflite

        try:
            _tflite.check_target(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return value


def device_options(command: Callable) -> Callable:
    """The device settings of an export (`to_tflite`'s names): budgets of a microcontroller
    or an Ethos-U NPU, and Vela's configuration. `device_settings` gathers them."""
    for decorator in reversed((
            click.option("--max-flash", type=click.IntRange(1), metavar="BYTES",
                         help="tflm, Ethos-U: refuse a model (compiled, for Ethos-U) larger "
                              "than this."),
            click.option("--max-ram", type=click.IntRange(1), metavar="BYTES",
                         help="tflm: refuse a model whose tensor arena is larger than this."),
            npu_options,
            click.option("--allow-cpu-ops", is_flag=True,
                         help="Ethos-U: accept ops Vela leaves to the CPU instead of refusing "
                              "the file."),
            click.option("--max-latency-ms", type=FloatRange(0, min_open=True), metavar="MS",
                         help="Ethos-U: refuse a model whose estimated inference time is over "
                              "this."),
            click.option("--max-sram", type=click.IntRange(1), metavar="BYTES",
                         help="Ethos-U: refuse a model that uses more SRAM than this."))):
        command = decorator(command)
    return command


def device_settings(kwargs: dict) -> dict:
    """Takes the `device_options` out of a command's keyword arguments: those given."""
    from tfcompress._targets import DEVICE_OPTIONS

    values = {k: kwargs.pop(k) for k in DEVICE_OPTIONS}
    return {k: v for k, v in values.items() if v not in (None, False)}


def npu_options(command: Callable) -> Callable:
    """`--system-config` and `--memory-mode`: Vela's names, for an Ethos-U `--target`."""
    command = click.option(
        "--memory-mode", metavar="NAME",
        help="Ethos-U: Vela's memory mode (default: Vela's for the accelerator).")(command)
    return click.option(
        "--system-config", metavar="NAME",
        help="Ethos-U: Vela's system configuration, e.g. Ethos_U55_High_End_Embedded "
             "(default: Vela's for the accelerator).")(command)


_SEEN: contextvars.ContextVar = contextvars.ContextVar("tfcompress_warned", default=frozenset())


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ start-up chatter for the command line (not for the library)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Hides what TensorFlow, the converter and LiteRT print from native code (start-up lines,
    CUDA probes, converter settings, delegate notices) and Python warnings, while our own lines
    on `sys.stderr` still show. Everything is put back afterwards."""
    quiet_tensorflow()
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        real_stderr = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
        real_stderr = False
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    old_stream = sys.stderr
    os.dup2(devnull, 2)
    os.close(devnull)
    if real_stderr:
        sys.stderr = open(saved, "w", buffering=1, closefd=False)  # noqa: SIM115
    seen = _SEEN.set(frozenset())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _own_warnings_only
            yield
    finally:
        _SEEN.reset(seen)
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = old_stream


def user_errors(fn: Callable) -> Callable:
    """Turns the library's ValueError/TypeError (and file-system errors) into a one-line CLI
    error with exit code 1, and adds `--verbose`: without it, native log lines are hidden."""

    @click.option("--verbose", "show_logs", is_flag=True,
                  help="Also show TensorFlow's, the converter's and LiteRT's own log lines.")
    @functools.wraps(fn)
    def wrapper(*args, show_logs: bool = False, **kwargs):
        from tfcompress._progress import shown

        quiet = contextlib.nullcontext() if show_logs else quiet_output()
        try:
            with quiet, shown():
                return fn(*args, **kwargs)
        except (ValueError, TypeError) as e:
            raise click.ClickException(" ".join(str(e).split("\n"))) from None
        except OSError as e:
            where = f" {e.filename}" if e.filename else ""
            raise click.ClickException(
                f"Could not read or write{where}: {e.strerror or e}. Check the path and its "
                "permissions.") from None

    return wrapper


def say(message: str) -> None:
    """Progress on stderr, so that stdout stays clean for tables and JSON."""
    click.echo(message, err=True)


data_help = (
    "Data: 'mnist', 'shapes', an .npz with arrays x and y, or a folder of class sub-folders."
)


INPUT_RANGE_HELP = ("What images from --data become for the model: 0-1, -1-1 (MobileNet's "
                    "preprocessing) or 0-255. Default: read from the model's first "
                    "Rescaling/Normalization layer, or from a .tflite file's metadata "
                    "(tfcompress writes it), else 0-1.")


SPLIT_HELP = ("Which images of --data: all of it (a folder or .npz of your test images), or "
              "its train or test part (the split every training command makes).")


def split_option(command: Callable) -> Callable:
    """Adds `--split` (all, train, test; passed as `split`), for commands that only read."""
    from tfcompress._options import SPLITS

    return click.option("--split", type=click.Choice(SPLITS), default="all",
                        show_default=True, help=SPLIT_HELP)(command)


def input_range_option(command: Callable) -> Callable:
    """Adds `--input-range` (passed to the command as `input_range`)."""
    from tfcompress._options import INPUT_RANGES

    return click.option("--input-range", type=click.Choice(INPUT_RANGES), default=None,
                        help=INPUT_RANGE_HELP)(command)


METRIC_HELP = ("What scores every model: top1 (default), top5, map50 or map (COCO mAP@0.5 and "
               "@0.5:0.95; the default for a detector), or a Keras metric name for other "
               "models (mse, mae, auc...: the targets need not be class labels).")


def metric_options(command: Callable) -> Callable:
    """Adds `--metric` and `--metric-direction` (passed as `metric`, `metric_direction`)."""
    command = click.option("--metric-direction", type=click.Choice(("max", "min")),
                           default=None,
                           help="Whether higher (max) or lower (min) is better, for a metric "
                                "whose direction tfcompress does not know.")(command)
    return click.option("--metric", default=None, help=METRIC_HELP)(command)


def metric_of(metric: str | None, direction: str | None):
    """The `Metric` the options name, or `None` without them (top-1, or mAP@0.5 for a
    detector); a bad name is a user error."""
    from tfcompress.metrics import as_metric

    if metric is None and direction is None:
        return None
    return as_metric(metric, direction)


DISTRIBUTE_HELP = ("Train on several devices: 'mirrored' (tf.distribute.MirroredStrategy over "
                   "the local GPUs, else the logical CPUs). --batch-size is the global batch.")


def distributed(command: Callable) -> Callable:
    """Adds `--distribute` to a command that trains and runs its body in that strategy's
    scope (place it under `@user_errors`, so that a bad setting is one line)."""
    from tfcompress._distribute import STRATEGIES

    @functools.wraps(command)
    def run(*args, distribute=None, **kwargs):
        from tfcompress import _distribute

        with _distribute.scope(distribute):
            return command(*args, **kwargs)

    return click.option("--distribute", type=click.Choice(STRATEGIES), default=None,
                        help=DISTRIBUTE_HELP)(run)


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, shown in the order given."""
    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def unsafe_and_json(files: str = "model file's", json_help: str = "Print the result as JSON."
                    ) -> Callable:
    """`--unsafe` (Keras' safe mode off, for trusted files) and `--json` (as `as_json`)."""
    return options(
        click.option("--unsafe", is_flag=True, help=f"Allow the {files} Lambda layers to run "
                                                    "their code (trusted files only)."),
        click.option("--json", "as_json", is_flag=True, help=json_help))


def training_options(defaults: Any, epochs_help: str | None = None, min_epochs: int = 1
                     ) -> Callable:
    """`--epochs` and `--batch-size` (and `--learning-rate` where the function takes one),
    with the function's own defaults (`tfcompress._options`)."""
    found = [click.option("--epochs", default=defaults["epochs"], show_default=True,
                          type=click.IntRange(min_epochs), help=epochs_help),
             click.option("--batch-size", default=defaults["batch_size"], show_default=True,
                          type=click.IntRange(1))]
    if "learning_rate" in defaults:
        found.append(click.option("--learning-rate", default=defaults["learning_rate"],
                                  show_default=True, type=FloatRange(0, min_open=True)))
    return options(*found)


def training_command(files: str = "model file's") -> Callable:
    """What every command that trains takes last: `--unsafe`, `--json`, `--input-range`,
    one-line errors and `--distribute`, in that order in its help."""
    def apply(command: Callable) -> Callable:
        return unsafe_and_json(files)(input_range_option(user_errors(distributed(command))))

    return apply
