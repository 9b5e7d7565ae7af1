"""What `to_tflite` wrote and what the LiteRT interpreter found in it."""

from dataclasses import dataclass, field

from tfcompress import _targets, _tflite
from tfcompress._ethosu import NpuReport
from tfcompress.export._micro import MicroReport


@dataclass(frozen=True)
class ExportReport:
    """What `to_tflite` wrote and what the LiteRT interpreter found in it."""

    path: str
    quantization: str
    size_bytes: int
    inputs: tuple[_tflite.TensorInfo, ...]
    outputs: tuple[_tflite.TensorInfo, ...]
    op_counts: dict[str, int] = field(default_factory=dict)
    float_ops: tuple[_tflite.OpInfo, ...] = ()
    integer_only: bool = False
    calibration_samples: int = 0
    target: str = "litert"
    agreement: float | None = None
    agreement_samples: int = 0
    # "top-1" (per output position), or "detections" (a detector: images with the same
    # confident boxes and classes)
    agreement_kind: str = "top-1"
    micro: "MicroReport | None" = None
    npu: "NpuReport | None" = None
    # weight tensors (constants) of each integer width: {8: n, 4: m}
    weight_bits: dict[int, int] = field(default_factory=dict)
    # ops of an int8 file that compute with 16-bit activations (`int16_layers`)
    int16_ops: int = 0

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "runtime": _targets.runtime(self.target),
            "agreement": self.agreement,
            "agreement_samples": self.agreement_samples,
            "agreement_kind": self.agreement_kind,
            "micro": None if self.micro is None else self.micro.to_dict(),
            "npu": None if self.npu is None else self.npu.to_dict(),
            "path": self.path,
            "quantization": self.quantization,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "op_counts": dict(self.op_counts),
            "float_ops": [o.to_dict() for o in self.float_ops],
            "integer_only": self.integer_only,
            "calibration_samples": self.calibration_samples,
            "weight_bits": {str(k): v for k, v in self.weight_bits.items()},
            "int16_ops": self.int16_ops,
        }

    @property
    def weights_line(self) -> str:
        """How many weight tensors are int4 and int8, e.g. `weights: 6 tensors int4 (packed),
        0 int8`."""
        return (f"weights: {self.weight_bits.get(4, 0)} tensors int4 (packed), "
                f"{self.weight_bits.get(8, 0)} int8")

    def __str__(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in self.op_counts.items())
        kind = "integer-only" if self.integer_only else "has float compute"
        text = (
            f"{self.path}: {self.quantization}, {self.size_bytes:,} bytes, {kind}; "
            f"input {self.inputs[0].dtype}{list(self.inputs[0].shape)}, output "
            f"{self.outputs[0].dtype}; ops: {ops}"
        )
        if self.int16_ops and self.quantization == "int8":
            text += (f"\n16-bit activations in {self.int16_ops} op"
                     f"{'' if self.int16_ops == 1 else 's'}, int8 elsewhere")
        if self.weight_bits.get(4):
            text += "\n" + self.weights_line
        if self.agreement is not None:
            runtime = _targets.runtime(_targets.get(self.target).interpreter)
            if self.agreement_kind == "detections":
                text += (f"\nthe same detections as the Keras model (score > 0.3, IoU >= 0.5) "
                         f"in {runtime}: {100 * self.agreement:.2f} % of "
                         f"{self.agreement_samples} images")
            else:
                text += (f"\ntop-1 agreement with the Keras model in {runtime}: "
                         f"{100 * self.agreement:.2f} % of {self.agreement_samples} images")
        if self.micro is not None:
            text += f"\n{self.micro}\nwrote {', '.join(self.micro.files)}"
        if self.npu is not None:
            text += f"\n{self.npu}\nwrote {', '.join(self.npu.files)}"
        return text
