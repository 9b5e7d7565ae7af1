"""What a `compress` run records: one `StepRecord` per step (and the baseline), and the
`PipelineResult` that gathers them with the budget's verdict."""

from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class StepRecord:
    """One row of the report: a step's model, its int8 (or final) TFLite file and measurements.

    Accuracy is measured in LiteRT (XNNPACK) on the test images, and again with LiteRT's
    reference kernels (`accuracy_reference`, what TFLite Micro computes); `delta` is in points
    against the baseline (the input model as float32 TFLite).
    """

    index: int
    step: str
    description: str
    model_path: str
    tflite_path: str
    params: int
    size_bytes: int
    gzip_bytes: int
    latency_ms_p50: float
    latency_ms_p90: float
    accuracy: float
    delta: float
    seconds: float
    skipped: str | None = None
    info: dict | None = None
    search: list | None = None
    accuracy_reference: float | None = None
    npu: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PipelineResult:
    """Everything a `compress` run measured; also written to OUT_DIR/report.json.

    `max_accuracy_drop` is the budget in force (1 point unless another was given) and
    `meets_budget` its verdict; `data_sources` says which images each figure comes from;
    `warnings` lists what the run noticed and could not fix (e.g. a search with no value within
    budget).
    """

    recipe: dict
    data: str
    seed: int
    baseline: StepRecord
    steps: tuple[StepRecord, ...]
    max_accuracy_drop: float
    out_dir: str
    side_by_side: dict | None = None
    data_sources: dict | None = None
    warnings: tuple[str, ...] = ()
    metric: dict | None = None
    npu: dict | None = None

    @property
    def final(self) -> StepRecord:
        return self.steps[-1] if self.steps else self.baseline

    @property
    def worse_by(self) -> float:
        """How much worse the final model scores than the baseline, in the metric's display
        units (points for a percentage); negative when it scores better."""
        lower_is_better = (self.metric or {}).get("direction") == "min"
        return self.final.delta if lower_is_better else -self.final.delta

    @property
    def meets_budget(self) -> bool:
        return self.worse_by <= self.max_accuracy_drop + 1e-9

    def ratios(self) -> dict:
        """Final vs baseline: how many times smaller on disk and gzipped, and faster (p50;
        from the two files timed side by side at the end of the run, where they were), the
        accuracy change in points and the budget's verdict."""
        b, f = self.baseline, self.final
        pair = self.side_by_side or {"baseline_ms_p50": b.latency_ms_p50,
                                     "final_ms_p50": f.latency_ms_p50}
        return {"smaller": round(b.size_bytes / f.size_bytes, 2),
                "smaller_gzip": round(b.gzip_bytes / f.gzip_bytes, 2),
                "faster_p50": round(pair["baseline_ms_p50"] / pair["final_ms_p50"], 2),
                "accuracy_delta": f.delta, "meets_budget": self.meets_budget}

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "data": self.data, "seed": self.seed,
                "data_sources": self.data_sources, "metric": self.metric,
                "baseline": self.baseline.to_dict(),
                "steps": [s.to_dict() for s in self.steps],
                "final": self.final.to_dict(), "ratios": self.ratios(),
                "side_by_side": self.side_by_side,
                "max_accuracy_drop": self.max_accuracy_drop, "meets_budget": self.meets_budget,
                "warnings": list(self.warnings), "npu": self.npu}


def retimed(record: StepRecord, times: np.ndarray) -> StepRecord:
    return replace(record, latency_ms_p50=float(np.percentile(times, 50)),
                   latency_ms_p90=float(np.percentile(times, 90)))
