"""TFLite metadata: what a `.tflite` file's input expects and what its outputs mean, in the
format LiteRT's tools, the TFLite Support task library and Android Studio's ML model binding
read (a `TFLITE_METADATA` buffer holding a `ModelMetadata` flatbuffer, file identifier
`M001`, with the labels as `labels.txt` in a zip archive appended to the model).

tfcompress writes, for the first input, the normalization that maps raw 0-255 pixels to the
model's input (`(pixel - mean) / std`, per channel) and the image's colour space; for the
first output, the class names (`TENSOR_AXIS_LABELS`). It reads them back to feed images in
the range a file expects. The maintained writer (`tflite-support`) pins protobuf below 4,
which TensorFlow 2.21 cannot share, so the tables are built here with `flatbuffers`, the
library TensorFlow itself uses, following the public `metadata_schema.fbs` (field slots
noted below).
"""

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NAME = "TFLITE_METADATA"
IDENTIFIER = b"M001"
PARSER_VERSION = "1.0.0"  # the schema version whose fields are written here
LABELS = "labels.txt"
# Enum values of metadata_schema.fbs.
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
_IMAGE_PROPERTIES = 2  # ContentProperties
_RGB, _GRAYSCALE = 1, 2  # ColorSpaceType
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType


@dataclass(frozen=True)
class FileMetadata:
    """What a file's metadata says: the first input's normalization of 0-255 pixels (per
    channel), its colour space and the first output's class names."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color_space: str | None = None
    labels: tuple[str, ...] | None = None

    def preprocessing(self) -> Any:
        """The `tfcompress.data.Preprocessing` that feeds the file as its metadata says, or
        None without a normalization."""
        if self.mean is None or self.std is None:
            return None
        from tfcompress.data import Preprocessing

        mean, std = np.array(self.mean), np.array(self.std)
        for name, (m, s) in {"0-255": (0, 1), "0-1": (0, 255), "-1-1": (127.5, 127.5)}.items():
            if np.allclose(mean, m, atol=1e-4) and np.allclose(std, s, rtol=1e-4):
                return Preprocessing(name, source="the file's TFLite metadata")
        return Preprocessing("0-255", mean=self.mean, std=self.std,
                             source="the file's TFLite metadata")


def normalization(preprocessing: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`(mean, std)` on raw 0-255 pixels equivalent to a `Preprocessing` (which starts from
    [0, 1] images): `(pixel - mean) / std` is what the model takes."""
    from tfcompress.data._preprocess import _SCALE

    scale, offset = _SCALE[preprocessing.input_range]
    mean = np.asarray(preprocessing.mean if preprocessing.mean is not None else (0.0,))
    std = np.asarray(preprocessing.std if preprocessing.std is not None else (1.0,))
    n = max(len(mean), len(std))
    mean, std = np.broadcast_to(mean, n), np.broadcast_to(std, n)
    raw_mean = (mean - offset) * 255.0 / scale
    raw_std = std * 255.0 / scale
    return tuple(float(v) for v in raw_mean), tuple(float(v) for v in raw_std)


def add(content: bytes, preprocessing: Any = None, labels: Any = None, channels: int = 3,
        *, pack_labels: bool = True) -> bytes:
    """`content` with TFLite metadata: the input's normalization (from `preprocessing`, a
    `Preprocessing`) and colour space, and the output's `labels` (a `labels.txt` appended
    as a zip when `pack_labels`; the class names are still counted in the metadata without
    it). Nothing to say returns `content` unchanged."""
    if preprocessing is None and not labels:
        return content
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    labels = [str(v) for v in labels] if labels else None
    meta = _model_metadata(preprocessing, labels, channels, pack_labels)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(meta, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    if labels and pack_labels:
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
            z.writestr(LABELS, "\n".join(labels) + "\n")
        out += archive.getvalue()
    return out


ANCHORS = "tfcompress.anchors"  # a detector's (A, 4) float32 anchors, for decoding its output


def add_anchors(content: bytes, anchors: Any) -> bytes:
    """`content` with a detector's anchors in a metadata entry of their own (little-endian
    float32 `[y_center, x_center, height, width]` rows), so that the file alone can be
    decoded and scored. Call before `add`, whose label archive goes after the model."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != ANCHORS]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.asarray(anchors, "<f4").tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = ANCHORS, len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_anchors(model: "str | os.PathLike | bytes") -> np.ndarray | None:
    """The `(A, 4)` anchors a file carries (`add_anchors`), or None."""
    content = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(content, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _text(entry.Name()) == ANCHORS:
            data = bytes(root.Buffers(entry.Buffer()).DataAsNumpy())
            return np.frombuffer(data, "<f4").reshape(-1, 4).astype(np.float32)
    return None


def read(model: "str | os.PathLike | bytes") -> FileMetadata | None:
    """The metadata of a `.tflite` path or its bytes, or None when it has none."""
    content = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(content, 0)
    buffer = None
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _text(entry.Name()) == NAME:
            buffer = root.Buffers(entry.Buffer())
    if buffer is None or buffer.DataLength() == 0:
        return None
    data = bytes(buffer.DataAsNumpy())
    return _parse(data, _archive_labels(content))


# -- writing ----------------------------------------------------------------------------------

def _model_metadata(preprocessing: Any, labels: list[str] | None, channels: int,
                    pack_labels: bool) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(256)
    inputs = _vector(b, [_input_tensor(b, preprocessing, channels)])
    outputs = _vector(b, [_output_tensor(b, labels if pack_labels else None, labels)])
    subgraph = _table(b, 10, [(0, "offset", b.CreateString("image classifier")),  # SubGraph
                              (2, "offset", inputs), (3, "offset", outputs)])
    subgraphs = _vector(b, [subgraph])
    strings = [b.CreateString(text) for text in (
        "tfcompress model", "Written by tfcompress: input normalization of 0-255 pixels and "
        "class labels.", PARSER_VERSION)]
    root = _table(b, 8, [(0, "offset", strings[0]), (1, "offset", strings[1]),  # ModelMetadata
                         (3, "offset", subgraphs), (7, "offset", strings[2])])
    b.Finish(root, file_identifier=IDENTIFIER)
    return bytes(b.Output())


def _input_tensor(b: Any, preprocessing: Any, channels: int) -> int:
    name = b.CreateString("image")
    image = _table(b, 2, [(0, "int8", _GRAYSCALE if channels == 1 else _RGB)])  # ImageProperties
    content = _table(b, 3, [(0, "uint8", _IMAGE_PROPERTIES), (1, "offset", image)])  # Content
    units = None
    if preprocessing is not None:
        mean, std = normalization(preprocessing)
        mean_vec, std_vec = _floats(b, mean), _floats(b, std)
        options = _table(b, 2, [(0, "offset", mean_vec), (1, "offset", std_vec)])
        units = _vector(b, [_table(b, 2, [(0, "uint8", _NORMALIZATION_OPTIONS),  # ProcessUnit
                                          (1, "offset", options)])])
    return _table(b, 7, [(0, "offset", name), (3, "offset", content),  # TensorMetadata
                         (4, "offset", units)])


def _output_tensor(b: Any, packed: list[str] | None, labels: list[str] | None) -> int:
    name = b.CreateString("probability")
    description = b.CreateString(f"{len(labels)} classes" if labels else "class scores")
    files = None
    if packed:
        file_name = b.CreateString(LABELS)
        files = _vector(b, [_table(b, 5, [(0, "offset", file_name),  # AssociatedFile
                                          (2, "int8", _TENSOR_AXIS_LABELS)])])
    return _table(b, 7, [(0, "offset", name), (1, "offset", description),  # TensorMetadata
                         (6, "offset", files)])


def _table(b: Any, slots: int, fields: list[tuple[int, str, Any]]) -> int:
    """A table of `slots` fields, from `(slot, kind, value)`: kind `offset` (a string, vector
    or table made before), `uint8` or `int8`; a None value is left out."""
    prepend = {"offset": b.PrependUOffsetTRelativeSlot, "uint8": b.PrependUint8Slot,
               "int8": b.PrependInt8Slot}
    b.StartObject(slots)
    for slot, kind, value in fields:
        if value is not None:
            prepend[kind](slot, value, 0)
    return b.EndObject()


def _vector(b: Any, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _floats(b: Any, values: tuple[float, ...]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(v)
    return b.EndVector()


# -- reading ----------------------------------------------------------------------------------

def _parse(data: bytes, labels: tuple[str, ...] | None) -> FileMetadata:
    """The fields tfcompress uses, read from a `ModelMetadata` buffer (written by any tool)."""
    from flatbuffers import number_types as N
    from flatbuffers.table import Table

    if data[4:8] != IDENTIFIER:
        return FileMetadata(labels=labels)

    def field(table: Table, slot: int) -> int:
        return table.Offset(4 + 2 * slot)

    def sub(table: Table, slot: int) -> Table | None:
        o = field(table, slot)
        return None if not o else Table(table.Bytes, table.Indirect(o + table.Pos))

    def items(table: Table, slot: int) -> list[Table]:
        o = field(table, slot)
        if not o:
            return []
        start, n = table.Vector(o), table.VectorLen(o)
        return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(n)]

    def floats(table: Table, slot: int) -> tuple[float, ...] | None:
        o = field(table, slot)
        if not o:
            return None
        start, n = table.Vector(o), table.VectorLen(o)
        return tuple(float(table.Get(N.Float32Flags, start + 4 * i)) for i in range(n))

    root = Table(data, int.from_bytes(data[:4], "little"))
    subgraphs = items(root, 3)
    if not subgraphs or not items(subgraphs[0], 2):
        return FileMetadata(labels=labels)
    tensor = items(subgraphs[0], 2)[0]
    mean = std = color = None
    for unit in items(tensor, 4):
        o = field(unit, 0)
        if o and unit.Get(N.Uint8Flags, o + unit.Pos) == _NORMALIZATION_OPTIONS:
            options = sub(unit, 1)
            if options is not None:
                mean, std = floats(options, 0), floats(options, 1)
    content = sub(tensor, 3)
    if content is not None:
        image = sub(content, 1)
        if image is not None and field(image, 0):
            space = image.Get(N.Int8Flags, field(image, 0) + image.Pos)
            color = {_RGB: "RGB", _GRAYSCALE: "GRAYSCALE"}.get(space)
    return FileMetadata(mean, std, color, labels)


def _archive_labels(content: bytes) -> tuple[str, ...] | None:
    """The labels file of the zip archive appended to a model, if any."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            names = z.namelist()
            name = LABELS if LABELS in names else next(
                (n for n in names if n.endswith(".txt")), None)
            if name is None:
                return None
            lines = z.read(name).decode("utf-8", "replace").splitlines()
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    return tuple(line.strip() for line in lines if line.strip())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
