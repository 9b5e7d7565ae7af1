import pytest

from tfcompress.pruning import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfcompress.pruning.schedules import SCHEDULES

EXAMPLES = {
    "ConstantSparsity": ConstantSparsity(0.6, begin_step=5, end_step=50, frequency=10),
    "PolynomialDecay": PolynomialDecay(0.1, 0.9, begin_step=10, end_step=110, power=2,
                                       frequency=20),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_config_round_trip(name):
    schedule = EXAMPLES[name]
    clone = SCHEDULES[name].from_config(schedule.get_config())
    assert clone == schedule
    assert [clone(s) for s in range(0, 200, 7)] == [schedule(s) for s in range(0, 200, 7)]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_no_pruning_before_begin_step(name):
    schedule = EXAMPLES[name]
    assert schedule(schedule.begin_step - 1) == (False, 0.0)


def test_polynomial_is_zhu_gupta_cubic():
    s = PolynomialDecay(0.0, 0.8, begin_step=100, end_step=1100, frequency=100)
    assert s.sparsity(100) == 0.0
    assert s.sparsity(600) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert s.sparsity(1100) == 0.8 and s.sparsity(10**6) == 0.8
    values = [s.sparsity(t) for t in range(100, 1101, 100)]
    assert values == sorted(values)
    assert [t for t in range(0, 1300) if s.should_update(t)] == list(range(100, 1101, 100))


def test_end_step_is_an_update_step_off_the_grid():
    s = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=250, frequency=100)
    assert [t for t in range(400) if s.should_update(t)] == [0, 100, 200, 250]


def test_constant_without_end_keeps_updating():
    s = ConstantSparsity(0.5, frequency=10)
    assert s(10_000) == (True, 0.5) and s(10_001) == (False, 0.5)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: PolynomialDecay(0.0, 1.0), r"final_sparsity must be in \(0, 1\)"),
        (lambda: PolynomialDecay(0.5, 0.2), "must be >= initial_sparsity"),
        (lambda: PolynomialDecay(end_step=0), "end_step .* must be greater"),
        (lambda: PolynomialDecay(frequency=0), "frequency must be"),
        (lambda: PolynomialDecay(power=0), "power must be"),
        (lambda: ConstantSparsity(0.0), r"sparsity must be in \(0, 1\)"),
        (lambda: ConstantSparsity(0.5, begin_step=-1), "begin_step must be"),
        (lambda: ConstantSparsity(0.5, begin_step=10, end_step=5), "or -1 to prune"),
    ],
)
def test_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_user_defined_schedule():
    class Step(PruningSchedule):
        def sparsity(self, step):
            return 0.5 if step >= 3 else 0.0

    s = Step()
    assert s(2) == (True, 0.0) and s(3) == (True, 0.5)
    with pytest.raises(NotImplementedError, match="get_config"):
        s.get_config()
