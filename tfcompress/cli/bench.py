"""`tfcompress bench`: time and score `.tflite` models side by side in LiteRT."""

import click

from tfcompress.cli._common import (
    TargetType,
    data_help,
    input_range_option,
    metric_of,
    metric_options,
    npu_options,
    say,
    split_option,
    user_errors,
)


@click.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", help=f"Labelled data to score. {data_help}")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="Interpreter threads.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1),
              help="Timed invocations per model.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0),
              help="Untimed invocations before timing.")
@click.option("--target", type=TargetType(),
              default="litert", show_default=True,
              help="Runtime: LiteRT (XNNPACK), LiteRT's reference kernels, TFLite Micro, or an "
                   "Arm Ethos-U NPU configuration such as ethos-u55-128 (Vela's estimates, "
                   "scored on the reference kernels; the npu extra).")
@npu_options
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@split_option
@input_range_option
@metric_options
@user_errors
def bench_command(models, data, threads, runs, warmup, target, system_config, memory_mode,
                  as_json, split, input_range, metric, metric_direction):
    """Benchmark one or more .tflite MODELS in the LiteRT interpreter (ratios vs the first).

    With several models, their latencies come from timing them side by side (in turns), so
    that a passing load hits them all alike.
    """
    import dataclasses

    import numpy as np

    from tfcompress import _targets
    from tfcompress.bench import benchmark, compare, time_side_by_side, to_json

    metric = metric_of(metric, metric_direction)
    ctx = click.get_current_context()
    given = [f"--{name}" for name in ("threads", "runs", "warmup")
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
    if _targets.is_npu(target):
        if given:
            raise click.UsageError(f"{given[0]} times the file on this host; an Ethos-U "
                                   "target reports Vela's estimates instead.")
        _npu_bench(models, target, data, system_config, memory_mode, metric, split,
                   input_range, as_json)
        return
    if system_config or memory_mode:
        raise click.UsageError("--system-config and --memory-mode go with an Ethos-U --target.")
    reports = [
        benchmark(m, data, threads=threads, runs=runs, warmup=warmup, progress=say,
                  target=target, metric=metric, split=split, preprocessing=input_range)
        for m in models
    ]
    if len(models) > 1:
        say(f"timing the {len(models)} models side by side")
        times = time_side_by_side(models, data, threads=threads, runs=runs, warmup=warmup,
                                  target=target)
        reports = [dataclasses.replace(r, latency_ms_p50=float(np.percentile(t, 50)),
                                       latency_ms_p90=float(np.percentile(t, 90)),
                                       latency_ms_mean=float(np.mean(t)))
                   for r, t in zip(reports, times, strict=True)]
    click.echo(to_json(reports) if as_json else compare(reports))


def _npu_bench(models, target, data, system_config, memory_mode, metric, split, input_range,
               as_json) -> None:
    import json

    from tfcompress.bench import compare_npu, estimate_npu

    reports = [estimate_npu(m, target, data, system_config=system_config,
                            memory_mode=memory_mode, metric=metric, split=split,
                            preprocessing=input_range, progress=say) for m in models]
    click.echo(json.dumps([r.to_dict() for r in reports], indent=2) if as_json
               else compare_npu(reports))
