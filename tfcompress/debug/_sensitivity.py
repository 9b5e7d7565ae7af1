"""Sensitivity scans: how much accuracy a model loses when only one layer is pruned, quantized
or thinned, and allocations that spend a compression budget where it costs least.

A scan changes one layer at a time, with no training, and scores the model on held-out
images; the result is a table, a plot and a JSON file that later steps read
(`Pruning(layer_sparsity=scan.sparsities(0.8))`, the pipeline's `per_layer: true`,
`to_tflite(..., float_layers=scan.float_layers())`).
"""

import os
from typing import Any

import numpy as np
from keras import ops

from tfcompress import _io, _legacy, _loading
from tfcompress._macs import layer_macs
from tfcompress._scan import LayerSensitivity, SensitivityScan
from tfcompress.data import as_arrays
from tfcompress.data._parts import class_ids
from tfcompress.metrics import Metric, as_metric

TECHNIQUES = ("prune", "quantize", "channels", "int4")
_DEFAULT_AMOUNT = {"prune": 0.8, "quantize": 1.0, "channels": 0.5, "int4": 1.0}


def _scorer(metric: Metric, x: np.ndarray, y: np.ndarray, batch_size: int = 250):
    """`score(predict)`: `metric` of a model's `predict` function on `(x, y)`."""
    def score(predict: Any) -> float:
        return metric.score((y[start:start + batch_size],
                             ops.convert_to_numpy(predict(x[start:start + batch_size])))
                            for start in range(0, len(x), batch_size))

    return score


def _scan_prune(model: Any, score: Any, amount: float, base: float, metric: Metric
                ) -> list[LayerSensitivity]:
    from tfcompress.pruning import magnitude_mask, prunable_targets

    predict = model.predict_on_batch
    out = []
    for t in prunable_targets(model):
        original = ops.convert_to_numpy(t.variable)
        t.variable.assign(original * magnitude_mask(original, amount))
        try:
            acc = score(predict)
        finally:
            t.variable.assign(original)
        out.append(LayerSensitivity(t.layer.name, int(original.size), acc,
                                    metric.drop(acc, base),
                                    macs=layer_macs(t.layer)))
    return out


def _scan_channels(model: Any, score: Any, amount: float, base: float, metric: Metric
                   ) -> list[LayerSensitivity]:
    from tfcompress.pruning import ChannelGraph, channel_keep
    from tfcompress.pruning._channels import l1_norm

    graph = ChannelGraph(model)
    groups = [g for g in graph.groups if g.prunable]
    if not groups:
        raise ValueError(f"No channel of model {model.name!r} can be thinned (no Conv/Dense "
                         "layer whose output channels can be removed).")
    refs = graph.channel_weights()
    predict = model.predict_on_batch
    out = []
    for group in groups:
        keep = {g.id: np.ones(g.size, bool) for g in groups}
        keep[group.id] = channel_keep(l1_norm(graph, group), amount)
        saved = []
        for entry in refs:
            mask = graph.weight_mask(*entry, keep)
            if not mask.all():
                value = ops.convert_to_numpy(entry[0].variable)
                saved.append((entry[0].variable, value))
                entry[0].variable.assign(value * mask)
        try:
            acc = score(predict)
        finally:
            for variable, value in saved:
                variable.assign(value)
        size = sum(int(np.prod(ref.variable.shape)) for layer in group.producers
                   for ref in graph.producer_weights(layer) if ref.attribute.endswith("kernel"))
        touched = {id(layer): layer for layer in [
            *group.producers, *(m for m, _ in group.members), *(c for c, _ in group.consumers)]}
        macs = sum(layer_macs(layer) for layer in touched.values())
        out.append(LayerSensitivity(group.name, size, acc, metric.drop(acc, base), macs=macs))
    return out


def _consumers(model: Any) -> dict[str, tuple[str, ...]]:
    """For each layer, the layers that read its output, followed through layers without
    weights up to the next layers with weights (which are included)."""
    from tfcompress import _graph

    calls = _graph.layer_nodes(_graph.flat(model))
    readers: dict[str, list[str]] = {}
    weighted = set()
    for op, _, inputs in calls:
        name = getattr(op, "name", "")
        if getattr(op, "weights", None):
            weighted.add(name)
        for up in inputs:
            readers.setdefault(up, []).append(name)
    out = {}
    for op, _, _ in calls:
        found, todo = [], list(readers.get(op.name, []))
        while todo:
            name = todo.pop(0)
            if name in found:
                continue
            found.append(name)
            if name not in weighted:
                todo.extend(readers.get(name, []))
        out[op.name] = tuple(found)
    return out


def _scan_quantize(model: Any, score: Any, base: float, calibration: np.ndarray,
                   metric: Metric) -> tuple[list[LayerSensitivity], float]:
    from tfcompress.pruning._selection import all_layers
    from tfcompress.quantization import calibrate_ranges
    from tfcompress.quantization._layers import ActivationQuantizer, _QuantWeightLayer

    consumers = _consumers(model)
    macs_of = {layer.name: layer_macs(layer) for layer in all_layers(model)}

    q = calibrate_ranges(model, calibration)
    points = [layer for layer in all_layers(q)
              if isinstance(layer, (ActivationQuantizer, _QuantWeightLayer))]
    weighted = [layer for layer in points if isinstance(layer, _QuantWeightLayer)]

    def predict(batch):
        return q(batch, training=False)

    all_quantized = score(predict)
    out = []
    try:
        for layer in weighted:
            for p in points:
                p.simulate = False
            layer.simulate = True
            layer.output_quantizer.simulate = True
            acc = score(predict)
            name = layer.name.removesuffix("_quant")
            size = int(np.prod(layer.kernel.shape))
            out.append(LayerSensitivity(name, size, acc, metric.drop(acc, base),
                                        consumers.get(name, ()), macs_of.get(name, 0)))
    finally:
        for p in points:
            p.simulate = True
    return out, all_quantized


def _scan_int4(model: Any, score: Any, calibration: np.ndarray, metric: Metric
               ) -> tuple[list[LayerSensitivity], float, float]:
    """Every layer int8, then one layer's weights at 4 bits at a time: its drop from the
    all-int8 model. Returns the layers, the all-int8 score and the all-int4 one."""
    from tfcompress.pruning._selection import all_layers
    from tfcompress.quantization import QuantConvTranspose, calibrate_ranges
    from tfcompress.quantization._layers import _QuantWeightLayer

    macs_of = {layer.name: layer_macs(layer) for layer in all_layers(model)}
    q = calibrate_ranges(model, calibration)
    weighted = [layer for layer in all_layers(q) if isinstance(layer, _QuantWeightLayer)
                and not isinstance(layer, QuantConvTranspose)]

    def predict(batch):  # eager: each call reads the layers' widths anew
        return q(batch, training=False)

    int8 = score(predict)
    out = []
    try:
        for layer in weighted:
            layer.weight_bits = 4
            acc = score(predict)
            layer.weight_bits = 8
            name = layer.name.removesuffix("_quant")
            out.append(LayerSensitivity(name, int(np.prod(layer.kernel.shape)), acc,
                                        metric.drop(acc, int8), (), macs_of.get(name, 0)))
        for layer in weighted:
            layer.weight_bits = 4
        int4 = score(predict)
    finally:
        for layer in weighted:
            layer.weight_bits = 8
    return out, int8, int4


def sensitivity(
    model: Any,
    data: Any,
    technique: str = "prune",
    amount: float | None = None,
    num_samples: int = 500,
    *,
    cache: "str | os.PathLike | None" = None,
    safe_mode: bool = True,
    metric: Any = None,
) -> SensitivityScan:
    """The accuracy drop when only one layer is pruned, quantized or thinned, for every layer.

    No training: each layer is changed in place of the trained weights, the model scored on
    `data`, and the weights put back. `quantize` simulates int8 (weights and the layer's
    output, ranges calibrated on `data` as `calibrate_ranges` does) for one layer at a time.

    Args:
        model: A trained classifier: a `keras.Model` or a `.keras` path. Not modified.
        data: Labelled images to score on (its test split; for `quantize`, its training split
            calibrates the ranges).
        technique: `"prune"` (unstructured magnitude pruning of the layer's kernel),
            `"quantize"`, `"int4"` or `"channels"` (the lowest-L1 output channels of one
            channel group zeroed).
        amount: The sparsity for `prune` (default 0.8) or the fraction of channels for
            `channels` (default 0.5); ignored for `quantize` and `int4`.
        num_samples: Images scored per layer. Defaults to `500`.
        cache: A JSON path: if it holds a scan of the same model, technique, amount and
            samples, it is returned; otherwise the scan runs and is saved there. Defaults to
            `None`.
        safe_mode: Keras' safe mode when `model` is a path. Defaults to `True`.
        metric: What scores the model: `"top1"`, `"top5"`, `"map50"`/`"map"` (a
            detector), a Keras metric or a `tfcompress.metrics.Metric` (with its direction).
            Defaults to `None`: top-1, or `map50` for a detector.

    Returns:
        A `SensitivityScan`.

    Raises:
        ValueError: For an unknown technique, an amount outside (0, 1), or data without labels.

    Examples:
        >>> import tfcompress as tfc
        >>> ds = tfc.data.load("mnist")
        >>> scan = sensitivity(tfc.reference.reference_cnn(), ds, "prune", num_samples=50)
        >>> names = [s.layer for s in scan.layers]
        >>> names[:2]
        ['conv1', 'dw2']
    """
    model = _legacy.keras3(model)  # a Keras 2 (tf_keras) model is carried over
    if technique not in TECHNIQUES:
        raise ValueError(f"Unknown technique {technique!r}; expected one of {TECHNIQUES}.")
    amount = _DEFAULT_AMOUNT[technique] if amount is None else float(amount)
    if technique not in ("quantize", "int4") and not 0.0 < amount < 1.0:
        raise ValueError(f"amount must be in (0, 1) for {technique!r}, got {amount}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    if isinstance(model, (str, os.PathLike)):
        model = _loading.load_keras_model(model, safe_mode=safe_mode, compile=False)
    x, y = as_arrays(data, split_name="test", limit=num_samples)
    if y is None:
        raise ValueError("A sensitivity scan scores accuracy, so data needs labels: an (x, y) "
                         "tuple, a Dataset or a labelled data path.")
    from tfcompress._training import is_detector

    if metric is None and is_detector(model):
        metric = "map50"
    metric = as_metric(metric).for_model(model)
    x, y = np.asarray(x, np.float32), (class_ids(y) if metric.classifies else y)
    fingerprint = _io.model_fingerprint(model)
    if cache is not None and os.path.exists(cache):
        cached = SensitivityScan.load(cache)
        if (cached.model_fingerprint, cached.technique, cached.amount, cached.samples,
                Metric.from_dict(cached.metric).name) == (
                fingerprint, technique, amount, len(x), metric.name):
            return cached
    metric.check_fits(y[:8], ops.convert_to_numpy(model.predict_on_batch(x[:8])))
    score = _scorer(metric, x, y)
    base = score(model.predict_on_batch)
    all_changed = None
    if technique == "prune":
        layers = _scan_prune(model, score, amount, base, metric)
    elif technique == "channels":
        layers = _scan_channels(model, score, amount, base, metric)
    else:
        calibration, _ = as_arrays(data, split_name="train", limit=500)
        calibration = np.asarray(calibration, np.float32)
        if technique == "quantize":
            layers, all_changed = _scan_quantize(model, score, base, calibration, metric)
        else:
            layers, base, all_changed = _scan_int4(model, score, calibration, metric)
    scan = SensitivityScan(technique, amount, base, len(x), tuple(layers), fingerprint,
                           all_changed, metric.to_dict())
    if cache is not None:
        scan.save(cache)
    return scan
