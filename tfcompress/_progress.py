"""Progress bars with an ETA for the long loops (LiteRT scoring, calibration), shown only when
the command line asks for them and standard error is a terminal; the library is silent."""

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator
from typing import Any

_SHOWN = contextvars.ContextVar("tfcompress_progress_shown", default=False)
MIN_ITEMS = 50  # shorter loops end before a bar would help


@contextlib.contextmanager
def shown() -> Iterator[None]:
    """Within this block, `track` draws progress bars (the CLI wraps each command in it)."""
    token = _SHOWN.set(True)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def track(items: Iterable[Any], length: int, label: str) -> Iterable[Any]:
    """`items` as they are, drawn as a bar with an ETA on a terminal inside `shown()`."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if not (_SHOWN.get() and terminal and length >= MIN_ITEMS):
        return items
    return _bar(items, length, label)


def _bar(items: Iterable[Any], length: int, label: str) -> Iterator[Any]:
    import click

    with click.progressbar(items, length=length, label=f"  {label}", file=sys.stderr,
                           show_eta=True, show_percent=True) as bar:
        yield from bar
