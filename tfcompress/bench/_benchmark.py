"""Run `.tflite` models in the LiteRT interpreter: size, gzip size, latency, accuracy, dtypes."""

import gzip
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress import _targets, _tflite
from tfcompress.data import Dataset, as_arrays, as_part, check_classes, load
from tfcompress.data._parts import label_max
from tfcompress.metrics import as_metric, warn_if_near_chance


@dataclass(frozen=True)
class BenchmarkReport:
    """Measurements of one `.tflite` model in the LiteRT interpreter."""

    path: str
    size_bytes: int
    gzip_bytes: int
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_mean: float
    threads: int
    runs: int
    accuracy: float | None
    num_samples: int
    fully_int8: bool
    input_dtype: str
    op_dtypes: dict[str, list[str]] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)
    target: str = "litert"
    metric: str = "top1"

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p90": self.latency_ms_p90,
            "latency_ms_mean": self.latency_ms_mean,
            "threads": self.threads,
            "runs": self.runs,
            "accuracy": self.accuracy,
            "num_samples": self.num_samples,
            "fully_int8": self.fully_int8,
            "input_dtype": self.input_dtype,
            "op_dtypes": dict(self.op_dtypes),
            "op_counts": dict(self.op_counts),
            "target": self.target,
            "runtime": _targets.runtime(self.target),
            "metric": self.metric,
        }


def benchmark(
    path: "str | os.PathLike",
    data: Any = None,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    *,
    max_samples: int | None = None,
    progress: Callable[[str], None] | None = None,
    target: str = "litert",
    metric: Any = None,
    split: str = "test",
    preprocessing: Any = None,
) -> BenchmarkReport:
    """Measures a `.tflite` model in the LiteRT interpreter.

    Latency is the wall time of single-image `invoke()` calls (batch 1, as on a device) after
    `warmup` untimed calls. Accuracy is the `metric` (top-1 unless told) over every labelled
    sample, one image at a time, with float inputs quantized to the model's input type where
    it is integer; the data is read a batch at a time, so a folder or a stream of any size
    is scored in bounded memory.

    Args:
        path: The `.tflite` file.
        data: Images to time and, with labels, to score: a `Dataset`, a loader name or path
            (its test split), an `(x, y)` tuple, an image array or a stream (`tf.data`,
            `keras.utils.PyDataset`, a function returning batches). Defaults to `None`:
            latency on random input, no accuracy.
        threads: Interpreter threads. Defaults to `1`.
        runs: Timed invocations. Defaults to `50`.
        warmup: Untimed invocations before timing. Defaults to `5`.
        max_samples: Score at most this many samples. Defaults to `None` (all).
        progress: Called with a short message at each phase. Defaults to `None`.
        target: The runtime that runs the model: `"litert"` (XNNPACK), `"litert-reference"`
            (LiteRT's reference kernels, which TFLite Micro matches) or `"tflm"` (TFLite Micro;
            its host latency says nothing of a microcontroller's). Defaults to `"litert"`.
        metric: What `accuracy` holds: `"top1"`, `"top5"`, `"map50"`/`"map"` (a detector's
            file, decoded against the anchors it carries), a Keras metric or a
            `tfcompress.metrics.Metric`. Defaults to `None`: top-1, or `map50` for a file
            that carries anchors.
        split: For a `Dataset` or a loader source: which part is scored, `"test"`,
            `"train"` or `"all"` (a folder that holds only test images). Defaults to
            `"test"`.
        preprocessing: For a loader source: what its images become for the model (`"0-1"`,
            `"-1-1"`, `"0-255"` or a `tfcompress.data.Preprocessing`). Defaults to `None`:
            as the file's TFLite metadata says (every file tfcompress writes records it),
            else [0, 1]. A value that contradicts the metadata is warned about.

    Returns:
        A `BenchmarkReport`.

    Raises:
        ValueError: If the file is not a valid model, the data does not fit its input, or a
            count is not positive.

    Examples:
        >>> import tempfile, tfcompress as tfc
        >>> out = tempfile.mkdtemp() + "/m.tflite"
        >>> _ = tfc.export.to_tflite(tfc.reference.reference_cnn(), out, "float32")
        >>> report = benchmark(out, runs=5)
        >>> report.fully_int8, report.accuracy
        (False, None)
    """
    _check_counts(threads=threads, runs=runs, warmup=warmup)
    say = progress or (lambda _msg: None)
    interp = _tflite.interpreter(path, num_threads=threads, target=target)
    content = Path(os.fspath(path)).read_bytes()
    summary = _tflite.summarize(interp if target != "tflm" else _tflite.interpreter(content))
    inp = interp.get_input_details()[0]

    if isinstance(data, (str, os.PathLike)):
        preprocessing = _preprocessing_for(content, preprocessing, Path(path).name)
    source = None if data is None else _load_as_input(data, inp, preprocessing)
    part = None if source is None else (
        source.part(split) if isinstance(source, Dataset) else as_part(source))
    sample, labelled = (_random_input(inp), None) if part is None else part.head(1)
    metric = file_metric(metric, content, interp, Path(path).name)
    if part is not None and metric.classifies:  # before any timing: one line, no work
        _check_classes(part.label_max(), _classes(interp))
        if isinstance(source, Dataset):
            check_classes(source, _classes(interp), "the model")

    say(f"timing {Path(path).name} in {_targets.runtime(target)}: {warmup} warm-up + "
        f"{runs} runs, {threads} thread(s)")
    times = _time_invocations(interp, sample, runs, warmup)
    accuracy, scored = None, 0
    if labelled is not None:
        say(f"scoring {part.describe() if max_samples is None else f'{max_samples} samples'}")
        accuracy, scored = score(interp, part, metric, max_samples)
        if metric.classifies:
            warn_if_near_chance(accuracy, _classes(interp), scored, Path(path).name)
    return BenchmarkReport(
        path=os.fspath(path),
        size_bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9)),
        latency_ms_p50=float(np.percentile(times, 50)),
        latency_ms_p90=float(np.percentile(times, 90)),
        latency_ms_mean=float(np.mean(times)),
        threads=threads,
        runs=runs,
        accuracy=accuracy,
        num_samples=scored,
        fully_int8=summary.is_integer_only("int8"),
        input_dtype=summary.inputs[0].dtype,
        op_dtypes=summary.op_dtypes(),
        op_counts=summary.op_counts(),
        target=target,
        metric=metric.name,
    )


def time_side_by_side(
    paths: Sequence["str | os.PathLike"],
    data: Any = None,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    rounds: int = 10,
    target: str = "litert",
) -> list[np.ndarray]:
    """Times several `.tflite` models in turns, so that a load that comes and goes hits each
    of them alike: the fair way to compare their latencies.

    Every model gets `warmup` untimed calls, then the `runs` timed `invoke()` calls (batch 1)
    are split into `rounds` turns taken model after model.

    Args:
        paths: The `.tflite` files.
        data: Images to run (the first test image is used): as for `benchmark`. Defaults to
            `None` (random input).
        threads: Interpreter threads. Defaults to `1`.
        runs: Timed invocations per model. Defaults to `50`.
        warmup: Untimed invocations per model before timing. Defaults to `5`.
        rounds: Turns the timed invocations are split into. Defaults to `10`.
        target: The runtime, as for `benchmark`. Defaults to `"litert"`.

    Returns:
        One array per model: its `runs` latencies in milliseconds.

    Raises:
        ValueError: If a file is not a valid model, the data does not fit it, or a count is
            not positive.

    Examples:
        >>> import tempfile, numpy as np, tfcompress as tfc
        >>> out = tempfile.mkdtemp()
        >>> for width in (1, 0.25):
        ...     _ = tfc.export.to_tflite(tfc.reference.reference_cnn(width=width),
        ...                              f"{out}/w{width}.tflite", "float32")
        >>> big, small = time_side_by_side([f"{out}/w1.tflite", f"{out}/w0.25.tflite"], runs=20)
        >>> len(big), bool(np.median(small) < np.median(big))
        (20, True)
    """
    _check_counts(threads=threads, runs=runs, warmup=warmup, rounds=rounds)
    if not paths:
        raise ValueError("time_side_by_side needs at least one .tflite path.")
    interps = [_tflite.interpreter(p, num_threads=threads, target=target) for p in paths]
    x = None if data is None else as_arrays(
        _load_as_input(data, interps[0].get_input_details()[0]), split_name="test", limit=1)[0]
    samples = [x if x is not None else _random_input(i.get_input_details()[0]) for i in interps]
    for interp, sample in zip(interps, samples, strict=True):
        _time_invocations(interp, sample, 0, warmup)
    times: list[list[np.ndarray]] = [[] for _ in interps]
    for chunk in np.array_split(np.arange(runs), min(rounds, runs)):
        for interp, sample, out in zip(interps, samples, times, strict=True):
            out.append(_time_invocations(interp, sample, len(chunk), 0))
    return [np.concatenate(t) for t in times]


def score(interp: Any, data: Any, metric: Any = None, max_samples: int | None = None
          ) -> tuple[float, int]:
    """`(metric, samples scored)` of a batch-1 interpreter on labelled data, read a batch at
    a time (the first output of a multi-output model). Class labels beyond the model's
    outputs are refused at the first batch that has one."""
    from tfcompress._progress import track
    from tfcompress.detection import file_detections, has_postprocess

    part, metric = as_part(data), as_metric(metric)
    classes = _classes(interp)
    count = 0
    detections = metric.detection is not None and has_postprocess(interp)

    def pairs():
        nonlocal count
        batches = part.batches(64)
        if part.size is not None:
            n = part.size if max_samples is None else min(part.size, max_samples)
            batches = track(batches, -(-n // 64), "scoring in LiteRT")
        for x, y in batches:
            if y is None:
                raise ValueError(f"{part.name} has no labels to score against.")
            if max_samples is not None:
                x, y = x[: max_samples - count], y[: max_samples - count]
            if metric.classifies:
                _check_classes(label_max(y), classes)
            count += len(x)
            if detections:  # the file's own post-processing decodes its boxes
                yield y, file_detections(interp, np.asarray(x, np.float32))
            else:
                yield y, _tflite.run_all(interp, x, progress=False)[0]
            if max_samples is not None and count >= max_samples:
                break

    value = metric.score(pairs())
    return value, count


def file_metric(metric: Any, content: bytes, interp: Any, name: str) -> Any:
    """The metric that scores a file: `metric`, bound to the anchors the file carries for a
    detection metric (the default for a file that carries them)."""
    from tfcompress import _metadata

    anchors = _metadata.read_anchors(content)
    if metric is None and anchors is not None:
        metric = "map50"
    metric = as_metric(metric)
    if metric.detection is None:
        return metric
    if anchors is None:
        raise ValueError(
            f"{name} carries no anchors, so {metric.name} cannot decode its outputs into "
            "boxes. Export it from a detector with an Anchors layer (tfcompress export), or "
            "score a classifier with top1.")
    from tfcompress.detection import has_postprocess

    shape = tuple(_tflite.outputs_in_model_order(interp)[0]["shape"])
    if has_postprocess(interp):
        return metric.with_anchors(anchors)
    if len(shape) != 3 or shape[1] != len(anchors) or shape[2] < 5:
        raise ValueError(f"{name} outputs {shape}, not (1, {len(anchors)}, 4 + classes) for "
                         f"the {len(anchors)} anchors it carries.")
    return metric.with_anchors(anchors)


def _classes(interp: Any) -> int:
    """The number of classes the model's (first) output scores."""
    return int(_tflite.outputs_in_model_order(interp)[0]["shape"][-1])


def _check_classes(top: int | None, classes: int) -> None:
    """Raises when class labels go up to `top` but the model has fewer outputs."""
    if top is not None and top >= classes:
        raise ValueError(
            f"The data has labels up to {top}, but the model has {classes} outputs "
            f"(classes 0..{classes - 1}). Pass the data the model was trained on.")


def _preprocessing_for(content: bytes, asked: Any, name: str) -> Any:
    """The range images are fed to a file in: as asked, else as its TFLite metadata says
    (None: the loader's [0, 1]). Warns when what is asked contradicts the metadata."""
    from tfcompress import _metadata
    from tfcompress.data._preprocess import as_preprocessing

    meta = _metadata.read(content)
    recorded = meta.preprocessing() if meta is not None else None
    asked = as_preprocessing(asked)
    if asked is None:
        return recorded
    if recorded is not None and (
            _metadata.normalization(asked) != _metadata.normalization(recorded)):
        import warnings

        warnings.warn(
            f"The images are scaled to {asked.input_range} as asked (--input-range), but "
            f"{name}'s metadata says it takes {recorded.describe()}: its figures will be for "
            "images in another range. Leave --input-range out to follow the file.",
            stacklevel=3)
    return asked


def _load_as_input(data: Any, detail: dict, preprocessing: Any = None) -> Any:
    """A loader source read at the model input's size and channel count (image folders), in
    the range `preprocessing` says."""
    shape = [int(s) for s in detail["shape"][1:]]
    if isinstance(data, (str, os.PathLike)):
        size = {"image_size": tuple(shape[:2]), "channels": shape[2]} if len(shape) == 3 \
            else {}
        return load(data, preprocessing=preprocessing, **size)
    return data


def _check_counts(**counts: int) -> None:
    """Raises unless every count is >= 1 (`warmup` may be 0)."""
    for name, value in counts.items():
        low = 0 if name == "warmup" else 1
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}.")


def _random_input(detail: dict) -> np.ndarray:
    shape = [1 if s < 0 else int(s) for s in detail["shape_signature"]]
    return np.random.default_rng(0).uniform(0, 1, size=shape).astype(np.float32)


def _time_invocations(interp: Any, sample: np.ndarray, runs: int, warmup: int) -> np.ndarray:
    inp = interp.get_input_details()[0]
    _tflite.check_input_shape(inp, sample)
    interp.set_tensor(inp["index"], _tflite.quantize_input(sample, inp))
    _tflite.invoke(interp)  # once outside the clock: a damaged file fails here, clearly
    for _ in range(warmup):
        interp.invoke()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times[i] = (time.perf_counter() - t0) * 1e3
    return times


def compare(reports: Sequence[BenchmarkReport], baseline: int = 0) -> str:
    """Formats reports as a side-by-side table, with ratios against `reports[baseline]`.

    Args:
        reports: Benchmark reports, one per model.
        baseline: Index of the report the ratios are taken against. Defaults to `0`.

    Returns:
        A plain-text table.
    """
    if not reports:
        raise ValueError("compare needs at least one report.")
    base = reports[baseline]
    header = ("model", "size KB", "gzip KB", "x smaller", "p50 ms", "p90 ms", "x faster",
              "accuracy" if base.metric == "top1" else base.metric, "int8")
    rows = [header]
    for r in reports:
        rows.append((
            r.name,
            f"{r.size_bytes / 1024:.1f}",
            f"{r.gzip_bytes / 1024:.1f}",
            f"{base.size_bytes / r.size_bytes:.2f}",
            f"{r.latency_ms_p50:.3f}",
            f"{r.latency_ms_p90:.3f}",
            f"{base.latency_ms_p50 / r.latency_ms_p50:.2f}",
            "-" if r.accuracy is None else (
                f"{100 * r.accuracy:.2f}%" if re.fullmatch(r"top\d+", r.metric)
                else f"{r.accuracy:.4g}"),
            "yes" if r.fully_int8 else "no",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    runtimes = sorted({_targets.runtime(r.target) for r in reports})
    lines.append(f"measured in {', '.join(runtimes)}, {base.threads} thread(s)")
    return "\n".join(lines)


def to_json(reports: Sequence[BenchmarkReport]) -> str:
    """The reports as a JSON list."""
    return json.dumps([r.to_dict() for r in reports], indent=2)
