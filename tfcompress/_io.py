"""File handling shared by the library and the CLI: safe model loading and atomic writes."""

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_saved_model_dir(path: "str | os.PathLike") -> bool:
    """True when `path` is a TensorFlow SavedModel directory."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb"))


def load_keras_model(path: "str | os.PathLike", safe_mode: bool = True, compile: bool = True):
    """Loads a `.keras` (or legacy `.h5`) file with a clear error for every way it can fail.

    Args:
        path: The model file.
        safe_mode: Keep Keras' safe mode, which refuses to run a Lambda layer's code from the
            file. Defaults to `True`.
        compile: Restore the saved compile settings (optimizer, loss, metrics). Defaults to
            `True`.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: If the file is missing, not a Keras model, corrupt, or needs
            `safe_mode=False`.
    """
    import keras

    import tfcompress.quantization  # noqa: F401  (registers the fake-quant layers for loading)

    text = os.fspath(path)
    if not os.path.exists(text):
        raise ValueError(f"No model at {text}. Check the path.")
    if os.path.isdir(text):
        raise ValueError(
            f"{text} is a directory; expected a .keras file. (SavedModel directories can be "
            "exported to TFLite but not fine-tuned; save the Keras model with model.save().)"
        )
    if not text.lower().endswith(KERAS_SUFFIXES):
        raise ValueError(
            f"{text} is not a Keras model file; expected a name ending in "
            f"{', '.join(KERAS_SUFFIXES)} (save one with model.save('model.keras'))."
        )
    if text.lower().endswith(".keras") and not zipfile.is_zipfile(text):
        raise ValueError(
            f"Could not load {text} as a Keras model: the file is corrupt or not a Keras model "
            "(a .keras file is a zip archive, this one is not). Re-save it with model.save()."
        )
    try:
        return keras.saving.load_model(text, safe_mode=safe_mode, compile=compile)
    except ValueError as e:
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise ValueError(
                f"{text} contains a Lambda layer whose Python code would run when it loads. "
                "Keras' safe mode refuses that. If you trust the file, pass safe_mode=False "
                "(on the command line: --unsafe)."
            ) from e
        raise ValueError(f"Could not load {text} as a Keras model ({e}).") from e
    except (OSError, zipfile.BadZipFile, KeyError, TypeError) as e:
        raise ValueError(
            f"Could not load {text} as a Keras model: the file is corrupt or not a Keras "
            f"model ({type(e).__name__}: {e})."
        ) from e


def check_not_input(out: "str | os.PathLike", *inputs: "str | os.PathLike | None") -> None:
    """Raises if `out` would overwrite one of the inputs."""
    out_real = os.path.realpath(out)
    for src in inputs:
        if src is not None and isinstance(src, (str, os.PathLike)):
            if os.path.realpath(src) == out_real:
                raise ValueError(
                    f"The output {os.fspath(out)} is the input file; tfcompress never overwrites "
                    "its input. Choose another output path."
                )
    if os.path.isdir(out):
        raise ValueError(f"The output {os.fspath(out)} is a directory; give a file path.")


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike", suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; moves it into place only if the block succeeds.

    A reader never sees a half-written file: the final rename is atomic on one filesystem.
    The file gets the permissions a plain `open(path, "w")` would give it (the temporary file
    is private to its owner until then).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix,
                               dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _default_mode() -> int:
    """The mode a new file gets from `open()`: 0o666 less the process umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: "str | os.PathLike", data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def save_model_atomic(model, path: "str | os.PathLike") -> None:
    """Saves a Keras model to `path` (`.keras`) atomically."""
    if not os.fspath(path).endswith(".keras"):
        raise ValueError(f"Keras models are saved as .keras files; got {os.fspath(path)!r}.")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def write_text_atomic(path: "str | os.PathLike", text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)

