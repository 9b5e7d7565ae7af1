"""Reading what native code (TFLite Micro, the converter) prints on file descriptor 2."""

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class _Log:
    def __init__(self, file):
        self._file = file
        self._text: str | None = None

    def text(self) -> str:
        if self._text is None:
            self._file.seek(0)
            self._text = self._file.read().decode(errors="replace")
        return self._text


@contextlib.contextmanager
def captured_stderr() -> Iterator[_Log]:
    """Sends file descriptor 2 to a temporary file while the block runs; `log.text()` reads
    it afterwards. Python's `sys.stderr` is flushed first, and everything is put back."""
    with tempfile.TemporaryFile() as file:
        log = _Log(file)
        with contextlib.suppress(AttributeError, ValueError):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.text()
