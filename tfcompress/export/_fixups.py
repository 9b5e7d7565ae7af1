"""Rewrites of converter output: repairs of what the LiteRT and TFLite Micro kernels would
refuse, and a smaller encoding of the same model for devices whose flash counts."""

import numpy as np

# Ops whose int16-activation kernels take an int64 bias.
_INT64_BIAS_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def widen_int16_biases(content: bytes) -> bytes:
    """int32 biases of int16-activation convolutions and dense layers, rewritten as int64.

    From a quantization-aware model with 16-bit activations, the converter gives these ops an
    int32 bias, which the int16x8 kernels refuse (`bias->type != kTfLiteInt64`); the values
    are the same integers in a wider type (same scale), so the arithmetic is unchanged.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    changed = False
    for graph in model.subgraphs:
        for op in graph.operators:
            if names.get(codes[op.opcodeIndex]) not in _INT64_BIAS_OPS or len(op.inputs) < 3:
                continue
            data, bias = graph.tensors[op.inputs[0]], op.inputs[2]
            if bias < 0 or data.type != schema.TensorType.INT16:
                continue
            tensor = graph.tensors[bias]
            if tensor.type != schema.TensorType.INT32:
                continue
            buffer = model.buffers[tensor.buffer]
            values = np.frombuffer(bytes(buffer.data), dtype="<i4").astype("<i8")
            buffer.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
            tensor.type = schema.TensorType.INT64
            changed = True
    if not changed:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def share_zero_points(content: bytes) -> bytes:
    """`content` with one copy of each distinct zero-point vector, which every tensor that
    has it points to; the model, and every value a reader gets, is unchanged.

    Per-channel int8 weights and int32 biases carry a 64-bit zero point per channel, all
    zero, and the converter writes a copy for each tensor: 113 KB of MobileNetV2 (alpha
    0.35)'s 638 KB file, more than its 4-bit weights save. A FlatBuffer may refer to one
    vector from several tables (as shared strings do), and LiteRT, TFLite Micro and Vela
    read the vector through its offset alike. `content` must be a bare model (no archive
    appended after it).
    """
    import flatbuffers
    from tensorflow.lite.tools import flatbuffer_utils

    class SharingBuilder(flatbuffers.Builder):
        """Writes each distinct 64-bit integer vector once and hands back its offset."""

        def __init__(self, size: int) -> None:
            super().__init__(size)
            self.written: dict[bytes, int] = {}

        def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers' name)
            if x.dtype.kind != "i" or x.dtype.itemsize != 8:
                return super().CreateNumpyVector(x)
            key = x.astype("<i8").tobytes()
            if key not in self.written:
                self.written[key] = super().CreateNumpyVector(x)
            return self.written[key]

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    builder = SharingBuilder(len(content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    shared = bytes(builder.Output())
    return shared if len(shared) < len(content) else content
