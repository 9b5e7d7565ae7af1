"""The `auto` recipe: steps chosen from the model (its channels, its large weight matrices,
its parameters) and the data (how many training images, hence how long to fine-tune), each
searched by back-off within its share of the budget, and the reasons written down.

What it chooses, and the measurements behind it, are in `models/suite/` (a suite of models
and data nobody tuned the recipes on).
"""

import math
from typing import Any

import keras
import numpy as np

from tfcompress import _graph
from tfcompress._macs import layer_macs, model_macs
from tfcompress.data import Dataset
from tfcompress.pipeline._recipe import AUTO, Recipe, Step

# Searched values, most compressed first (the search backs off towards none).
CHANNEL_VALUES = (0.6, 0.45, 0.3, 0.15)
ENERGY_VALUES = (0.8, 0.9, 0.95)
SPARSITY_VALUES = (0.75, 0.6, 0.4)
FINE_TUNE_STEPS = 400  # optimizer steps per fine-tuning, whatever the data's size
MIN_EPOCHS, MAX_EPOCHS = 2, 20
MIN_SPARSE_PARAMS = 20_000  # below this, zeros save a few kilobytes of gzip at best
MIN_FACTORIZED_SHARE = 0.3  # large matrices must hold this share of the weights
MIN_FACTORIZED_WEIGHTS = 16_384


def auto_recipe(model: keras.Model, data: Dataset, batch_size: int) -> Recipe:
    """The steps `auto` takes on `model` with training data `data.train`: channel pruning
    with shrink where the model has channels to remove (speed and size), factorization where
    large matrices hold much of the weights, unstructured sparsity where there are enough
    weights for zeros to pay in the compressed size, then QAT and an integer file (with float
    layers if int8 alone misses the budget). Fine-tuning lasts about `FINE_TUNE_STEPS`
    optimizer steps, so a small set gets more epochs and a large one fewer. The rounding is
    the same for an Arm Ethos-U NPU: rounding to its 16-channel block keeps more channels
    than the block saves (`models/npu/npu_results.md`)."""
    params = int(model.count_params())
    images = data.train.size
    epochs, why_epochs = _epochs(images, batch_size)
    choices = [f"model: {params:,} parameters, {model_macs(model):,} multiply-accumulates "
               f"per image; data: {_images(images)}; {why_epochs}"]
    steps: list[Step] = []
    groups = _prunable_channels(model)
    if groups:
        widest = max(groups)
        round_to = 8 if widest >= 64 else 4 if widest >= 16 else 1
        steps.append(_searched("prune", {"granularity": "channel", "round_to": round_to,
                                         "epochs": epochs,
                                         "finetune_epochs": max(1, epochs // 2)},
                               CHANNEL_VALUES))
        choices.append(f"channel pruning with shrink: {len(groups)} groups of channels can "
                       f"be removed (the widest has {widest}), kept at multiples of "
                       f"{round_to}; fewer channels make the file smaller and faster")
    else:
        choices.append("no channel pruning: no group of channels can be removed from this "
                       "model (tfcompress.pruning's channel report says why)")
    big, share = _large_matrices(model, params)
    if big and share >= MIN_FACTORIZED_SHARE:
        steps.append(_searched("factorize", {"epochs": epochs}, ENERGY_VALUES))
        choices.append(f"factorization: {len(big)} layers with at least "
                       f"{MIN_FACTORIZED_WEIGHTS:,} weights hold {100 * share:.0f} % of them")
    else:
        choices.append("no factorization: large weight matrices hold "
                       f"{100 * share:.0f} % of the weights (it pays from "
                       f"{100 * MIN_FACTORIZED_SHARE:.0f} %)")
    if params >= MIN_SPARSE_PARAMS:
        steps.append(_searched("prune", {"granularity": "unstructured", "epochs": epochs},
                               SPARSITY_VALUES))
        choices.append("unstructured sparsity for the compressed (gzip) size: "
                       f"{params:,} parameters")
    else:
        choices.append(f"no unstructured sparsity: {params:,} parameters, under "
                       f"{MIN_SPARSE_PARAMS:,}, where zeros save little once compressed")
    qat_epochs = max(1, min(3, epochs // 4))
    qat_problem = _qat_problem(model)
    if qat_problem is None:
        steps.append(Step("qat", {"epochs": qat_epochs}))
        choices.append(f"an int8 file: quantization-aware training ({qat_epochs} epoch"
                       f"{'s' if qat_epochs > 1 else ''}), or post-training int8 if that holds "
                       "better, with float layers only where int8 alone misses the budget")
    else:
        choices.append(f"an int8 file by post-training quantization (no quantization-aware "
                       f"training: {qat_problem}), with float layers only where int8 alone "
                       "misses the budget")
    steps.append(Step("export", {"mode": "int8", "float_layers": "auto"}))
    return Recipe(AUTO, tuple(steps), tuple(choices))


def _qat_problem(model: keras.Model) -> str | None:
    from tfcompress.quantization import quantize_aware

    try:
        quantize_aware(model)
    except ValueError as e:
        return str(e)
    return None


def _searched(kind: str, settings: dict, values: tuple) -> Step:
    from tfcompress.pipeline._recipe import Search

    return Step(kind, settings, Search(tuple(values), "size", "backoff"))


def _epochs(images: int | None, batch_size: int) -> tuple[int, str]:
    if not images:
        return MIN_EPOCHS + 1, f"fine-tuning {MIN_EPOCHS + 1} epochs per step (a stream)"
    steps = math.ceil(images / batch_size)
    epochs = int(np.clip(math.ceil(FINE_TUNE_STEPS / steps), MIN_EPOCHS, MAX_EPOCHS))
    return epochs, (f"fine-tuning {epochs} epochs per step (about {FINE_TUNE_STEPS} steps of "
                    f"{batch_size} images)")


def _images(images: int | None) -> str:
    return "a stream" if not images else f"{images:,} training images"


def _prunable_channels(model: keras.Model) -> list[int]:
    """The sizes of the channel groups channel pruning could remove from (8 channels or
    more), or none when the model's graph is not one it can prune."""
    from tfcompress.pruning._channels import ChannelGraph

    try:
        graph = ChannelGraph(model)
    except (ValueError, TypeError, NotImplementedError):
        return []
    return [g.size for g in graph.groups if g.prunable and g.size >= 8]


def _large_matrices(model: keras.Model, params: int) -> tuple[list[Any], float]:
    """Weighted layers with at least `MIN_FACTORIZED_WEIGHTS` weights, and their share of
    all the weights."""
    big = [layer for layer in _graph.all_layers(model)
           if getattr(layer, "kernel", None) is not None and len(layer.kernel.shape) >= 2
           and int(np.prod(layer.kernel.shape)) >= MIN_FACTORIZED_WEIGHTS
           and layer_macs(layer) > 0]
    weights = sum(int(np.prod(layer.kernel.shape)) for layer in big)
    return big, weights / max(params, 1)
