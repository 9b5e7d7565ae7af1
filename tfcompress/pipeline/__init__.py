"""One call from a trained model to a verified edge artifact: recipes, a measured report per
step, resumable runs."""

from tfcompress.pipeline._recipe import BUILTIN, Recipe, Search, Step, load_recipe
from tfcompress.pipeline._run import PipelineResult, StepRecord, compress

__all__ = [
    "BUILTIN",
    "PipelineResult",
    "Recipe",
    "Search",
    "Step",
    "StepRecord",
    "compress",
    "load_recipe",
]
