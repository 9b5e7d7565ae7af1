"""Helpers shared by the CLI commands: user-error handling and data/model options."""

import functools
import os
from collections.abc import Callable

import click


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ start-up chatter for the command line (not for the library)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")


def user_errors(fn: Callable) -> Callable:
    """Turns the library's ValueError/TypeError into a one-line CLI error with exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_tensorflow()
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def say(message: str) -> None:
    """Progress on stderr, so that stdout stays clean for tables and JSON."""
    click.echo(message, err=True)


data_help = (
    "Data: 'mnist', 'shapes', an .npz with arrays x and y, or a folder of class sub-folders."
)
