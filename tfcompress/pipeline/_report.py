"""report.json, report.md and report.png of a pipeline run."""

import json
import os
from typing import Any

from tfcompress import _io
from tfcompress.pipeline._recipe import shown_name


def markdown(result: Any) -> str:
    """The results table (one row per step, the baseline first) and a summary line."""
    rows = [result.baseline, *result.steps]
    m = _Shown(result)
    lines = [
        f"# tfcompress report: recipe `{result.recipe['name']}` on {result.data}",
        "",
        "| step | parameters | size (bytes) | gzip size (bytes) | p50 (ms) | p90 (ms) | "
        f"{m.label} | reference kernels{m.suffix} | vs baseline ({m.unit}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r.description if r.step != "baseline" else "baseline (float32)"
        if r.skipped:
            name += f" (skipped: {r.skipped})"
        lines.append(
            f"| {r.index}. {name} | {r.params:,} | {r.size_bytes:,} | {r.gzip_bytes:,} | "
            f"{r.latency_ms_p50:.4f} | {r.latency_ms_p90:.4f} | {m.value(r.accuracy)} | "
            f"{m.value(r.accuracy_reference)} | {r.delta:+.4g} |")
    ratios = result.ratios()
    pair = result.side_by_side
    timing = "LiteRT p50, 1 thread" + (
        "; the baseline and the final file timed side by side, as in the table" if pair else "")
    lines += [
        "",
        f"Final model `{os.path.basename(result.final.tflite_path)}` against the float32 "
        f"baseline: {ratios['smaller']}x smaller on disk, {ratios['smaller_gzip']}x smaller "
        f"gzipped, {ratios['faster_p50']}x faster ({timing}), {m.name} "
        f"{result.final.delta:+.4g} {m.unit}.",
    ]
    verdict = "meets" if result.meets_budget else "does NOT meet"
    if m.percent and m.higher:
        lines.append(f"It {verdict} the {m.name} budget of -{result.max_accuracy_drop:g} "
                     "points.")
    else:
        lines.append(f"It {verdict} the budget: {m.name} at most {result.max_accuracy_drop:g} "
                     f"{'below' if m.higher else 'above'} the baseline.")
    lines += _npu_lines(result.npu)
    for choice in result.recipe.get("choices") or ():
        lines.append(f"The `{result.recipe['name']}` recipe chose: {choice}.")
    for r in result.steps:
        if r.search:
            key = next(k for k in r.search[0] if k not in (
                "val_accuracy", "within_budget", "chosen", "size", "latency"))
            tried = ", ".join(
                f"{row[key]}: {m.value(row['val_accuracy'])}{m.suffix}"
                f"{' (chosen)' if row['chosen'] else ''}" for row in r.search)
            lines.append(f"Step {r.index} searched {shown_name(key)} on the validation data: "
                         f"{tried}.")
    for text in result.warnings:
        lines.append(f"Warning: {text}")
    sources = result.data_sources or {}
    lines += ["", f"Every row's model and .tflite are in this folder. The metric is {m.name} "
              f"({'higher' if m.higher else 'lower'} is better); it is measured in "
              "LiteRT with XNNPACK (as on phones and boards) and with LiteRT's reference "
              "kernels (what TFLite Micro and most other delegates compute); latency with "
              "XNNPACK, 1 thread. Images behind each figure:"]
    lines += [f"- {part}: {where}" for part, where in (
        ("training (every step)", sources.get("train")),
        ("validation (the searches' budget)", sources.get("validation")),
        ("test (accuracy in the table)", sources.get("test")),
        ("input (what the images become for the model)", sources.get("input"))) if where]
    lines.append("")
    return "\n".join(lines)


def _npu_lines(npu: dict | None) -> list[str]:
    """The input model's dense int8 file against the final one on the Ethos-U target, as
    Vela estimates them."""
    if not npu:
        return []
    b, f = npu["baseline_int8"], npu["final"]
    rows = [("input model, int8 (dense)", b), ("final", f)]
    lines = ["", f"On the NPU `{npu['target']}`, as Vela {f['vela_version']} estimates it "
             f"({f['system_config']}, {f['memory_mode']}):", "",
             "| file | ops on the NPU | est. ms per inference | cycles | SRAM (KiB) | "
             "flash (KiB) | compiled model (bytes) |", "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        total = r["npu_ops"] + len(r["cpu_ops"])
        lines.append(f"| {name} | {r['npu_ops']} of {total} | {r['inference_ms']:.3f} | "
                     f"{r['cycles']:,} | {r['sram_bytes'] / 1024:.2f} | "
                     f"{r['flash_bytes'] / 1024:.2f} | {r['model_bytes']:,} |")
    lines += ["", f"The final file is {npu['faster']}x faster on the NPU than the input "
              f"model's dense int8 file, and its compiled model {npu['smaller']}x smaller."]
    lines += [f"On the CPU in the final file: {op}." for op in f["cpu_ops"]]
    if f.get("ops"):
        from tfcompress._ethosu import op_table

        lines += ["", "Where every op of the final file runs:", "", op_table(f["ops"])]
    return lines


class _Shown:
    """How a run's metric is shown: top-1 as "accuracy (%)", others by name."""

    def __init__(self, result: Any):
        spec = result.metric or {"name": "top1", "direction": "max", "percent": True}
        self.name = "accuracy" if spec["name"] == "top1" else spec["name"]
        self.percent, self.higher = spec["percent"], spec["direction"] == "max"
        self.suffix = " (%)" if self.percent else ""
        self.label = f"{self.name}{self.suffix}"
        self.unit = "points" if self.percent else "change"

    def value(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.2f}" if self.percent else f"{value:.4g}"

    def plotted(self, value: float) -> float:
        return 100 * value if self.percent else value


def plot(result: Any, path: str) -> None:
    """Accuracy against size (log scale) and against p50 latency, one labelled point per step
    (steps at the same spot share a label), the baseline starred and the budget dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [result.baseline, *result.steps]
    m = _Shown(result)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "size_bytes", "size (KB, log scale)"),
                           (axes[1], "latency_ms_p50", "LiteRT latency p50 (ms, 1 thread)")):
        xs = [getattr(r, key) / (1000 if key == "size_bytes" else 1) for r in rows]
        ys = [m.plotted(r.accuracy) for r in rows]
        ax.plot(xs[1:], ys[1:], "o-", color="tab:blue", label="steps")
        ax.plot(xs[:1], ys[:1], "*", markersize=14, color="tab:red", label="baseline (float32)")
        sign = -1 if m.higher else 1
        ax.axhline(ys[0] + sign * result.max_accuracy_drop, color="tab:red", linestyle="--",
                   linewidth=1, label=f"budget ({sign * result.max_accuracy_drop:+g} {m.unit})")
        spots: dict[tuple[str, str], tuple[float, float, list[str]]] = {}
        for r, x, y in zip(rows, xs, ys, strict=True):  # one label per spot at plot resolution
            spot = spots.setdefault((f"{x:.2g}", f"{y:.3g}"), (x, y, []))
            spot[2].append(f"{r.index}. {r.step}")
        for i, (x, y, names) in enumerate(spots.values()):  # labels alternate above and below
            ax.annotate(", ".join(names), (x, y), textcoords="offset points",
                        xytext=(4, 6 if i % 2 == 0 else -12), fontsize=8)
        if key == "size_bytes":
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(m.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"recipe {result.recipe['name']} on {result.data}")
    try:
        with _io.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def write_reports(result: Any) -> None:
    out = result.out_dir
    _io.write_text_atomic(os.path.join(out, "report.json"),
                          json.dumps(result.to_dict(), indent=2))
    _io.write_text_atomic(os.path.join(out, "report.md"), markdown(result))
    plot(result, os.path.join(out, "report.png"))
