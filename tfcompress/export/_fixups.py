"""Repairs of converter output that the LiteRT and TFLite Micro kernels would refuse."""

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
