"""Verdicts decided on the worst case: hand-made curves where the tuning criterion flips the
result, and a smoke run of the check on fresh draws that writes the spread table."""

import jax
import numpy as np
import pytest

from experiments.common import LEARNED, learned_wins
from experiments.reproduction import lto, lto_vs_rules
from experiments.reproduction.verdict import Cell, share_range, status, worst_case
from lopt import evaluation, gps, objectives

PAPER = ("gradient_descent", "momentum", "fixed_step_conjugate_gradient", "fixed_step_lbfgs")
LEADERS = PAPER[:3]
NUM_STEPS = 100


def _cell(label, conjugate_gradient):
    """Learned 1/(1+t) on two problems; gradient descent, momentum and L-BFGS at 2, 3 and 4
    times it; conjugate gradient as given."""
    steps = np.arange(NUM_STEPS + 1, dtype=np.float64)
    learned = np.tile(1 / (1 + steps), (2, 1))
    curves = {"gradient_descent": 2 * learned, "momentum": 3 * learned,
              "fixed_step_conjugate_gradient": conjugate_gradient(learned, steps),
              "fixed_step_lbfgs": 4 * learned, LEARNED: learned}
    return Cell(label, *learned_wins(evaluation.margin_of_victory(curves), NUM_STEPS))


def test_a_criterion_that_flips_the_result_decides_the_verdict():
    # Tuned by one criterion, CG trails everywhere; by the other it passes the learned
    # optimizer after iteration 50 (a better final objective bought with a slower start).
    trailing = _cell("mean objective", lambda learned, steps: learned + 0.01)
    passing = _cell("final objective",
                    lambda learned, steps: learned + np.where(steps <= 50, 0.01, -0.01))
    assert trailing.fractions == dict.fromkeys(PAPER, 1.0) and trailing.highest == 1.0
    assert passing.fractions["fixed_step_conjugate_gradient"] == 0.5
    assert status(trailing, LEADERS) == "reproduced"
    assert status(passing, LEADERS) == "partly reproduced"
    for order in ([trailing, passing], [passing, trailing]):
        spread = worst_case(order, LEADERS)
        assert spread.verdict == "partly reproduced"
        assert spread.fractions["fixed_step_conjugate_gradient"] == (0.5, 1.0)
        assert spread.fractions["gradient_descent"] == (1.0, 1.0)
        assert spread.highest == (1.0, 1.0)


def test_a_learned_optimizer_behind_everywhere_is_not_reproduced():
    behind = Cell("final objective", dict.fromkeys(PAPER, 0.4), 0.0)
    ahead = _cell("mean objective", lambda learned, steps: learned + 0.01)
    assert worst_case([ahead, behind], LEADERS).verdict == "not reproduced"


def test_worst_case_refuses_no_cells_and_mismatched_baselines():
    with pytest.raises(ValueError, match="at least one"):
        worst_case([], LEADERS)
    cell = _cell("a", lambda learned, steps: learned + 0.01)
    other = cell._replace(fractions={"gradient_descent": 1.0})
    with pytest.raises(ValueError, match="different baselines"):
        worst_case([cell, other], LEADERS)


@pytest.mark.parametrize("low, high, text", [(0.91, 0.98, "91-98%"), (1.0, 1.0, "100%"),
                                             (0.501, 0.499, "50%"), (0.0, 0.1, "0-10%")])
def test_share_range(low, high, text):
    assert share_range(low, high) == text


@pytest.mark.slow
def test_smoke_check_on_fresh_draws_writes_the_spread_table(tmp_path):
    settings = lto.Settings("smoke", str(tmp_path), use_pretrained=True)
    family_name = "logistic_regression"
    family = objectives.get(family_name)
    cells = lto.check_draws(settings, family, family_name, gps.pretrained(family_name))
    draws, criteria = settings.sizes.check_draws, len(lto.CRITERIA)
    assert len(cells) == draws * criteria
    assert [cell["paper"].label for cell in cells] == [
        f"fresh draw {draw}, {description}" for draw in range(1, draws + 1)
        for description in lto.CRITERIA.values()]
    # The draws are new problems: neither each other's nor the published draw's.
    published = lto.draw_problems(settings, family, family_name)[1]
    tests = [lto._fresh_draw(settings, family, family_name, draw)[1] for draw in (1, 2)]
    for index, test in enumerate(tests):
        for other in [published, *tests[index + 1:]]:
            assert not np.allclose(jax.tree.leaves(test)[0], jax.tree.leaves(other)[0])
    for cell in cells:
        assert list(cell["paper"].fractions) == list(PAPER)
        assert all(0.0 <= value <= 1.0 for value in cell["line_search"].fractions.values())
    table = lto._check_table(cells, settings)
    rows = [line for line in table.splitlines() if line.startswith("| paper |")]
    assert len(rows) == draws * criteria + 1
    spread = worst_case([cell["paper"] for cell in cells], LEADERS)
    assert rows[-1].endswith(f"| {share_range(*spread.highest)} | **{spread.verdict}** |")
    verdict = lto._verdicts(cells, settings, lto.SUBJECT)
    assert verdict.count("**") == 4 and f"**{spread.verdict}**" in verdict


@pytest.mark.parametrize("differences, verdict", [
    ([0.1, 0.2, 0.3], "the GPS policy is better"),       # mean 0.2 > 2 x 0.058
    ([-0.1, -0.2, -0.3], "the searched rule is better"),
    ([0.1, -0.1, 0.05], "a tie within two standard errors"),  # mean 0.017 < 2 x 0.062
])
def test_policy_against_rule_compares_per_problem_mean_objectives(differences, verdict):
    policy = np.arange(12.0).reshape(3, 4)
    rule = policy + np.asarray(differences)[:, None]  # every iteration shifted per problem
    mean, error, said = lto_vs_rules.policy_against_rule({LEARNED: policy,
                                                          lto_vs_rules.FOUND: rule})
    assert said == verdict
    np.testing.assert_allclose(mean, np.mean(differences))
    np.testing.assert_allclose(error, np.std(differences, ddof=1) / np.sqrt(3))
