"""Pruning schedules: the target sparsity as a pure function of the training step.

A schedule answers two questions for a step: should the masks be recomputed now
(`should_update`), and what sparsity should they have (`sparsity`). It holds no state, so it can
be tested, plotted and serialized on its own.
"""

import abc
import dataclasses
from typing import Any


class PruningSchedule(abc.ABC):
    """Base class of pruning schedules; subclass it to write your own.

    A subclass implements `sparsity(step)` and may override `should_update(step)`. Subclasses
    that are dataclasses get `get_config`/`from_config` for free.

    Examples:
        >>> class Halfway(PruningSchedule):
        ...     def sparsity(self, step): return 0.5 if step >= 100 else 0.0
        ...     def should_update(self, step): return step == 100
        >>> Halfway()(100)
        (True, 0.5)
    """

    @abc.abstractmethod
    def sparsity(self, step: int) -> float:
        """The target fraction of zero weights at `step`."""

    def should_update(self, step: int) -> bool:
        """Whether the masks are recomputed at `step`. Defaults to every step."""
        return True

    def __call__(self, step: int) -> tuple[bool, float]:
        """`(should_update, sparsity)` at `step`."""
        return self.should_update(step), self.sparsity(step)

    @property
    def final_sparsity_value(self) -> float | None:
        """The sparsity the schedule ends at, when it is known. Defaults to `None`."""
        return None

    def get_config(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return dataclasses.asdict(self)
        raise NotImplementedError(f"{type(self).__name__} must implement get_config().")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PruningSchedule":
        return cls(**config)


def _check_steps(
    begin_step: int, end_step: int, frequency: int, allow_open_end: bool, allow_single: bool = False
) -> None:
    if not isinstance(begin_step, int) or begin_step < 0:
        raise ValueError(f"begin_step must be an integer >= 0, got {begin_step!r}.")
    if not isinstance(frequency, int) or frequency < 1:
        raise ValueError(f"frequency must be an integer >= 1, got {frequency!r}.")
    if not isinstance(end_step, int):
        raise ValueError(f"end_step must be an integer, got {end_step!r}.")
    if allow_open_end and end_step == -1:
        return
    if end_step < begin_step or (end_step == begin_step and not allow_single):
        relation = "at least" if allow_single else "greater than"
        raise ValueError(
            f"end_step ({end_step}) must be {relation} begin_step ({begin_step})"
            + (", or -1 to prune until training stops." if allow_open_end else ".")
        )


def _check_sparsity(name: str, value: float, allow_zero: bool) -> None:
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value!r}.")


def _on_grid(step: int, begin_step: int, end_step: int, frequency: int) -> bool:
    if step < begin_step or (end_step != -1 and step > end_step):
        return False
    return (step - begin_step) % frequency == 0 or step == end_step


@dataclasses.dataclass(frozen=True)
class ConstantSparsity(PruningSchedule):
    """One sparsity from `begin_step` on, re-applied every `frequency` steps.

    Args:
        sparsity: The target fraction of zero weights, in `(0, 1)`.
        begin_step: First step at which weights are pruned. Defaults to `0`.
        end_step: Last step at which masks are recomputed; `-1` means until training stops,
            and `end_step == begin_step` prunes once (one-shot). Defaults to `-1`.
        frequency: Steps between mask updates. Defaults to `100`.

    Examples:
        >>> ConstantSparsity(0.5, begin_step=10)(110)
        (True, 0.5)
    """

    sparsity_value: float
    begin_step: int = 0
    end_step: int = -1
    frequency: int = 100

    def __init__(self, sparsity: float, begin_step: int = 0, end_step: int = -1,
                 frequency: int = 100):
        object.__setattr__(self, "sparsity_value", sparsity)
        object.__setattr__(self, "begin_step", begin_step)
        object.__setattr__(self, "end_step", end_step)
        object.__setattr__(self, "frequency", frequency)
        _check_sparsity("sparsity", sparsity, allow_zero=False)
        _check_steps(begin_step, end_step, frequency, allow_open_end=True, allow_single=True)

    def sparsity(self, step: int) -> float:
        return self.sparsity_value if step >= self.begin_step else 0.0

    def should_update(self, step: int) -> bool:
        return _on_grid(step, self.begin_step, self.end_step, self.frequency)

    @property
    def final_sparsity_value(self) -> float:
        return self.sparsity_value

    def get_config(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity_value, "begin_step": self.begin_step,
                "end_step": self.end_step, "frequency": self.frequency}


@dataclasses.dataclass(frozen=True)
class PolynomialDecay(PruningSchedule):
    """Sparsity that rises from `initial_sparsity` to `final_sparsity` along a polynomial.

    With `power=3` this is the gradual schedule of Zhu & Gupta (2017): pruning fast at first,
    while the network has many redundant weights, and slowly near the end:
    `s(t) = s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step)) ** power`.

    Args:
        initial_sparsity: Sparsity at `begin_step`, in `[0, 1)`. Defaults to `0.0`.
        final_sparsity: Sparsity from `end_step` on, in `(0, 1)`. Defaults to `0.8`.
        begin_step: Step at which pruning starts. Defaults to `0`.
        end_step: Step at which `final_sparsity` is reached. Defaults to `1000`.
        power: Exponent of the polynomial. Defaults to `3`.
        frequency: Steps between mask updates. Defaults to `100`.

    Examples:
        >>> s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
        >>> round(s.sparsity(500), 3), s.sparsity(1000), s.should_update(1000)
        (0.7, 0.8, True)
    """

    initial_sparsity: float = 0.0
    final_sparsity: float = 0.8
    begin_step: int = 0
    end_step: int = 1000
    power: float = 3
    frequency: int = 100

    def __post_init__(self):
        _check_sparsity("initial_sparsity", self.initial_sparsity, allow_zero=True)
        _check_sparsity("final_sparsity", self.final_sparsity, allow_zero=False)
        if self.final_sparsity < self.initial_sparsity:
            raise ValueError(
                f"final_sparsity ({self.final_sparsity}) must be >= initial_sparsity "
                f"({self.initial_sparsity}); pruning only removes weights."
            )
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {self.power!r}.")
        _check_steps(self.begin_step, self.end_step, self.frequency, allow_open_end=False)

    def sparsity(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            (1.0 - progress) ** self.power
        )

    def should_update(self, step: int) -> bool:
        return _on_grid(step, self.begin_step, self.end_step, self.frequency)

    @property
    def final_sparsity_value(self) -> float:
        return self.final_sparsity


SCHEDULES: dict[str, type[PruningSchedule]] = {
    "ConstantSparsity": ConstantSparsity,
    "PolynomialDecay": PolynomialDecay,
}
