"""File primitives shared by the library and the CLI: checks that an output can be written and
never lands on an input, locks, content fingerprints and atomic writes. Imports nothing of
tfcompress (model loading is `tfcompress._loading`, above it)."""

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_saved_model_dir(path: "str | os.PathLike") -> bool:
    """True when `path` is a TensorFlow SavedModel directory."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb"))


def input_paths(*inputs: object) -> list[str]:
    """The real paths of those `inputs` that name an existing file or folder (a data set's
    name such as `"mnist"`, a model object or `None` is left out)."""
    paths = []
    for src in inputs:
        if isinstance(src, (str, os.PathLike)) and os.path.exists(src):
            paths.append(os.path.realpath(src))
    return paths


def check_not_input(out: "str | os.PathLike", *inputs: object) -> None:
    """Raises if writing the file `out` would overwrite or change one of the inputs.

    Paths are compared after resolving symbolic links, so a link to an input (or a folder
    link leading to it) is caught; `out` inside an input folder (image data) is refused too.
    Also checks that `out` can be written (see `check_writable`).
    """
    out_real = os.path.realpath(out)
    for src in input_paths(*inputs):
        if src == out_real:
            raise ValueError(
                f"The output {os.fspath(out)} is the input {src}; tfcompress never overwrites "
                "its input. Choose another output path."
            )
        if os.path.isdir(src) and out_real.startswith(src.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"The output {os.fspath(out)} is inside the input folder {src}; writing there "
                "would change the input. Choose an output outside it."
            )
    if os.path.isdir(out):
        raise ValueError(f"The output {os.fspath(out)} is a directory; give a file path.")
    check_writable(os.path.dirname(os.path.abspath(out)))


def check_output_dir(out_dir: "str | os.PathLike", is_output: "Callable[[str], bool] | None",
                     *inputs: object) -> None:
    """Raises unless `out_dir` can hold a run's files without touching any input.

    `is_output(name)` says whether a file name is one a run writes in `out_dir`; an input whose
    real path is such a file in the real `out_dir` is refused, as is an `out_dir` inside an
    input folder or equal to it.
    """
    text = os.fspath(out_dir)
    if os.path.exists(text) and not os.path.isdir(text):
        raise ValueError(f"The output folder {text} is a file; give a folder path.")
    out_real = os.path.realpath(text)
    for src in input_paths(*inputs):
        if os.path.isdir(src):
            if out_real == src or out_real.startswith(src.rstrip(os.sep) + os.sep):
                raise ValueError(
                    f"The output folder {text} is inside the input folder {src}; writing there "
                    "would change the input. Choose an output folder outside it.")
        elif os.path.dirname(src) == out_real and is_output is not None and is_output(
                os.path.basename(src)):
            raise ValueError(
                f"The input {src} is named like a file this run writes in {text} "
                f"({os.path.basename(src)}), and tfcompress never overwrites an input. "
                "Choose another output folder.")
    check_writable(text)


def check_writable(path: "str | os.PathLike") -> None:
    """Raises unless `path` is, or can be created as, a folder this process can write in.

    Called before any expensive work, so that a bad output location fails at once.
    """
    text = os.path.abspath(os.fspath(path))
    probe = text
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(
            f"Cannot write in {os.fspath(path)}: {probe} is a file, not a folder. Choose "
            "another output location.")
    try:  # a real write: permission bits alone do not tell root or a read-only mount
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ValueError(
            f"Cannot write in {os.fspath(path)}: {probe} is not writable ({e.strerror}). "
            "Choose another output location.") from None


def fingerprint(*parts: object) -> str:
    """A short content hash of arrays, bytes and strings (for recognising a run's inputs)."""
    import numpy as np

    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.data)
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(str(part).encode())
        h.update(b"|")
    return h.hexdigest()


def model_fingerprint(model) -> str:
    """A content hash of a Keras model's architecture and weights."""
    import numpy as np

    weights = [np.asarray(w) for w in model.get_weights()]
    try:
        arch = model.to_json()
    except Exception:  # noqa: BLE001 (a subclassed model: its class and weights identify it)
        arch = type(model).__qualname__
    return fingerprint(arch, *weights)


@contextlib.contextmanager
def folder_lock(folder: "str | os.PathLike") -> Iterator[None]:
    """Holds an exclusive lock on `folder` (a `.lock` file in it) while the block runs.

    The operating system releases the lock when the process ends, however it ends, so a lock
    left by a killed run is never in the way. A second holder is refused with the first one's
    process id.
    """
    path = os.path.join(os.fspath(folder), LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            _lock_fd(fd)
        except OSError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ValueError(
                f"{os.fspath(folder)} is in use by another tfcompress run (process {other}). "
                "Wait for it to finish, or choose another output folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


LOCK_NAME = ".lock"
# A scratch folder left without a lock (by a version that did not lock them) is taken for
# abandoned after this long.
_UNLOCKED_STALE_SECONDS = 3600


@contextlib.contextmanager
def scratch_folder(parent: "str | os.PathLike", prefix: str) -> Iterator[str]:
    """A temporary folder in `parent`, locked while the block runs and removed after it.

    Kept beside the output rather than in the system temp folder, so that a killed run leaves
    nothing where the user would never look; what a killed run did leave (a folder with
    `prefix` whose lock no process holds) is removed the next time one is made there.
    """
    import shutil

    parent = os.fspath(parent)
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(prefix) and os.path.isdir(path) and not os.path.islink(path):
            if _abandoned(path):
                shutil.rmtree(path, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        fd = os.open(os.path.join(tmp, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_fd(fd)
            yield tmp
        finally:
            os.close(fd)


def _abandoned(folder: str) -> bool:
    """True when no process holds `folder`'s lock (or, without one, it is old)."""
    import time

    lock = os.path.join(folder, LOCK_NAME)
    if not os.path.exists(lock):
        return time.time() - os.path.getmtime(folder) > _UNLOCKED_STALE_SECONDS
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        _lock_fd(fd)
        return True
    except OSError:  # a running export holds it
        return False
    finally:
        os.close(fd)


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


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


def write_all_atomic(files: "dict[str, bytes]") -> None:
    """Writes several files as a set: all of them, or none changed.

    Every file is first written to a temporary file beside its target (where a full disk or a
    permission fails), then each is moved into place; if a move fails, the files already moved
    are put back as they were.
    """
    staged: list[tuple[str, str]] = []
    moved: list[tuple[str, str | None]] = []
    try:
        for path, data in files.items():
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            staged.append((tmp, os.fspath(path)))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, _default_mode())
        for tmp, path in staged:
            backup = None
            if os.path.isfile(path):
                backup = tmp + ".old"
                try:
                    os.link(path, backup)  # the old file stays in place until replaced
                except OSError:  # a filesystem without hard links
                    shutil.copy2(path, backup)
            os.replace(tmp, path)
            moved.append((path, backup))
    except BaseException:
        for path, backup in reversed(moved):
            with contextlib.suppress(OSError):
                if backup is None:
                    os.remove(path)
                else:
                    os.replace(backup, path)
        raise
    finally:
        for tmp, _ in staged:
            for leftover in (tmp, tmp + ".old"):
                with contextlib.suppress(OSError):
                    os.remove(leftover)


def write_text_atomic(path: "str | os.PathLike", text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)

